#!/usr/bin/env bash
# The deployment as an admin runs it: build the image, `up` the default stack plus Label Studio (profile
# labelstudio, which bootstraps its admin and token and connects the backend), import a prompt, see the
# candidates written back into Label Studio, stop gracefully, take it all down. Skips when no engine answers.
#   tests/compose_check.sh                      # on a normal machine with internet
#   TORCH="torch==2.13.0+cpu --find-links http://127.0.0.1:8765/" BUILD_NETWORK=host tests/compose_check.sh   # here
#   S3=1 tests/compose_check.sh                 # with docker-compose.s3.yml: models on object storage, no shared volume
set -euo pipefail
cd "$(dirname "$0")/.."
COMPOSE=${COMPOSE:-$(command -v docker-compose || echo "docker compose")}
S3=${S3:-0}
if [[ $S3 == 1 ]]; then COMPOSE="$COMPOSE -f docker-compose.yml -f docker-compose.s3.yml"; fi
if ! docker info >/dev/null 2>&1; then echo "SKIP: no Docker engine answers"; exit 0; fi
export COMPOSE_PROJECT_NAME=rlhfcheck LABEL_STUDIO_API_KEY=${LABEL_STUDIO_API_KEY:-0123456789abcdef0123456789abcdef01234567}
export PORT=${PORT:-9095}
start=$(date +%s)
cleanup() { $COMPOSE --profile labelstudio down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT
echo "== build"; $COMPOSE build backend $([[ $S3 == 1 ]] && echo objectstore)
echo "== up (default stack + Label Studio)"; $COMPOSE --profile labelstudio up -d
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) > deadline )); then echo "FAIL: $what"; $COMPOSE --profile labelstudio ps; $COMPOSE --profile labelstudio logs --tail 40
      for id in $($COMPOSE --profile labelstudio ps -q); do docker inspect "$id" | python3 -c "import json,sys
c=json.load(sys.stdin)[0]; h=c['State'].get('Health') or {}; log=h.get('Log') or [{}]
print(c['Name'], h.get('Status', '-'), (log[-1].get('Output') or '').strip())"; done; exit 1; fi
    sleep 3
  done
  echo "ok: $what ($(( $(date +%s) - start )) s)"
}
wait_for 300 "backend ready (/ready through the published port)" curl -sf "http://127.0.0.1:${PORT}/ready"
wait_for 300 "connect finished" sh -c "$COMPOSE --profile labelstudio ps connect | grep -q 'Exit 0'"
healthy() {  # healthy SERVICE...: each one's container healthcheck says healthy (docker inspect)
  local service id
  for service; do
    id=$($COMPOSE ps -q "$service") && [[ -n $id ]] || return 1
    [[ $(docker inspect -f '{{.State.Health.Status}}' "$id") == healthy ]] || return 1
  done
}
wait_for 600 "backend and workers healthy (their healthchecks: /ready, python -m workers.health)" \
  healthy backend worker-generate worker-train
docker ps --filter "name=${COMPOSE_PROJECT_NAME}" --format 'table {{.Names}}\t{{.Status}}'
LS=http://127.0.0.1:8080; AUTH="Authorization: Token ${LABEL_STUDIO_API_KEY}"
project=$(curl -sf -H "$AUTH" "$LS/api/projects" | python3 -c "import json,sys; print(json.load(sys.stdin)['results'][0]['id'])")
echo "== import a prompt into project $project, as the README tells compose users (no --url/--api-key: connect registered it)"
prompts=$(mktemp -d); trap 'cleanup; rm -rf "$prompts"' EXIT
echo 'What is the capital of France?' > "$prompts/prompts.txt"
$COMPOSE exec -T backend python -m backend import --project "$project" - < "$prompts/prompts.txt"
has_candidates() { curl -sf -H "$AUTH" "$LS/api/tasks?project=$project" | python3 -c "
import json,sys; tasks=json.load(sys.stdin); tasks=tasks.get('tasks', tasks)
sys.exit(0 if tasks and all(t['data'].get('answer1') and t['data'].get('answer2') for t in tasks) else 1)"; }
wait_for 900 "candidates written back into Label Studio" has_candidates
if [[ $S3 == 1 ]]; then
  echo "== models on object storage: no model volume shared, one cache per container"
  models() { docker inspect -f '{{range .Mounts}}{{if eq .Destination "/models"}}{{.Name}}{{end}}{{end}}' "$($COMPOSE ps -q "$1")"; }
  [[ $(models backend) != "$(models worker-generate)" && $(models worker-generate) != "$(models worker-train)" ]] \
    || { echo "FAIL: /models is shared"; exit 1; }
  $COMPOSE exec -T backend python -c "import fsspec, os, sys
fs, root = fsspec.core.url_to_fs(os.environ['MODEL_DIR'])
found = [p for p in fs.find(root) if p.endswith('/.manifest.json')]
print('objects: policy v0 manifests', found); sys.exit(0 if any('/policy/v0-' in p for p in found) else 1)" \
    || { echo "FAIL: policy v0 is not in the bucket"; exit 1; }
  cached=$($COMPOSE exec -T worker-generate sh -c 'ls /model-cache | wc -l' | tr -d '\r ')
  [[ $cached -ge 1 ]] || { echo "FAIL: the generation worker cached no version"; exit 1; }
  echo "ok: /models is each container's own; v0 in the bucket; the generation worker cached $cached version(s)"
fi
echo "== graceful stop (gunicorn is PID 1)"
t0=$(date +%s); $COMPOSE stop -t 30 backend; echo "ok: backend stopped in $(( $(date +%s) - t0 )) s, exit $(docker inspect -f '{{.State.ExitCode}}' rlhfcheck_backend_1 2>/dev/null || echo ?)"
echo "PASS: compose check in $(( $(date +%s) - start )) s"
