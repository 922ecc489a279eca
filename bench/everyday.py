"""Everyday instructions for the loop demo, generated from templates (no downloads), and the stated rules a
simulated annotator judges single answers by."""

from __future__ import annotations

import random
import re

TOPICS = [
    "brewing coffee",
    "watering houseplants",
    "saving money on groceries",
    "learning to swim",
    "planning a picnic",
    "cleaning a laptop keyboard",
    "falling asleep faster",
    "writing a thank-you note",
    "choosing running shoes",
    "storing fresh herbs",
    "training a puppy to sit",
    "packing for a weekend trip",
    "making a budget",
    "cooking rice",
    "removing a coffee stain",
    "starting a vegetable garden",
    "staying focused while studying",
    "preparing for a job interview",
    "keeping a cat entertained",
    "baking bread",
    "changing a bike tyre",
    "reducing screen time",
    "organising a closet",
    "learning a new language",
    "making friends in a new city",
    "drinking more water",
    "stretching after a run",
    "choosing a houseplant for low light",
    "tidying a desk",
    "writing a to-do list",
    "cooling down a hot room",
    "boiling an egg",
    "keeping bread fresh",
    "using a library",
    "saving energy at home",
    "recycling at home",
    "buying a used car",
    "caring for a sourdough starter",
    "taking better phone photos",
    "walking more each day",
    "hosting a board game night",
    "making pancakes",
    "washing wool sweaters",
    "sharpening a kitchen knife",
    "remembering names",
    "getting up earlier",
    "keeping a journal",
    "making iced tea",
    "cleaning windows",
    "painting a small room",
]
TEMPLATES = [
    "Give me a tip for {topic}.",
    "How do I get started with {topic}?",
    "What is a common mistake people make when {topic}?",
    "Explain the basics of {topic}.",
    "What should a beginner know about {topic}?",
    "Describe a simple routine for {topic}.",
    "Why does {topic} matter?",
]


def everyday_prompts(seed: int = 0) -> list[str]:
    """350 distinct instructions in a seeded order."""
    prompts = [t.format(topic=topic) for topic in TOPICS for t in TEMPLATES]
    random.Random(seed).shuffle(prompts)
    return prompts


_ENDS = re.compile(r"[.!?][\"')\]]*$")
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s", re.MULTILINE)


def ends_within_60_words(answer: str) -> bool:
    """The answer ends properly (its last sentence is finished) within 60 words."""
    text = answer.strip()
    return 0 < len(text.split()) <= 60 and bool(_ENDS.search(text))


def contains_no_list(answer: str) -> bool:
    """The answer has no bulleted or numbered list (and is not empty)."""
    return bool(answer.strip()) and not _LIST_LINE.search(answer)


RULES = {"short": ends_within_60_words, "no-list": contains_no_list}
