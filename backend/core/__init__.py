"""What every process shares and nothing below it: the one Settings object, named defaults, the algorithms'
traits (torch-free), the gates' rules, statistics, logging and file locks. Imports nothing else of backend."""
