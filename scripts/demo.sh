#!/usr/bin/env bash
# End-to-end demo on a fresh Debian 12 machine, as root: start a local single-node Slurm and a
# local Discord-compatible receiver, submit a job that runs out of memory with `jobmon submit`,
# and print the notification jobmon posts about it.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
app=$(pwd)
demo=${JOBMON_DEMO_DIR:-/tmp/jobmon-demo}
say() { printf '\n== %s\n' "$*"; }

say "1/5 local Slurm (scripts/slurm-local.sh setup)"
# A minimal Debian 12 has no python3: the receiver and jobmon need it, jobmon's first run its venv
# module (it pip-installs requests and filelock into ~/.local/share/jobmon/venv, over https).
bash scripts/need-packages.sh python3 python3-venv ca-certificates
bash scripts/slurm-local.sh setup
sinfo

say "2/5 local Discord-compatible receiver"
rm -rf "$demo" && mkdir -p "$demo/home" "$demo/work"
python3 tests/discord_receiver.py --port 0 --print --record "$demo/messages.jsonl" >"$demo/receiver.log" 2>&1 &
receiver=$!
trap 'kill $receiver 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q "example webhook" "$demo/receiver.log" 2>/dev/null && break; sleep 0.1; done
webhook=$(sed -n 's/.*example webhook: \(http[^)]*\)).*/\1/p' "$demo/receiver.log")
[ -n "$webhook" ] || { cat "$demo/receiver.log"; echo "demo: receiver did not start" >&2; exit 1; }
echo "receiver at ${webhook%/api/*}"

say "3/5 jobmon config in JOBMON_HOME=$demo/home"
export JOBMON_HOME="$demo/home" JOBMON_POLL_INTERVAL=2 JOBMON_PENDING_INTERVAL=2
printf '{"discord": {"success_webhook": "%s", "error_webhook": "%s"}}\n' "$webhook" "$webhook" >"$JOBMON_HOME/config.json"
chmod 600 "$JOBMON_HOME/config.json"
"$app/jobmon" test-discord

say "4/5 jobmon submit examples/oom_job.sbatch (asks for 100M, allocates 500 MB)"
cd "$demo/work"
"$app/jobmon" submit "$app/examples/oom_job.sbatch"
before=$(grep -c '"accepted"' "$demo/messages.jsonl" || true)
for _ in $(seq 120); do
    now=$(grep -c '"accepted"' "$demo/messages.jsonl" || true)
    [ "$now" -gt "$before" ] && break
    sleep 1
done
"$app/jobmon" status --all

say "5/5 the notification jobmon posted"
python3 - "$demo/messages.jsonl" <<'PY'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
accepted = [e for e in events if e.get("event") == "accepted"]
if len(accepted) < 2:
    sys.exit("demo: no job notification arrived within 120 s; see $JOBMON_HOME/logs/")
embed = json.loads(json.dumps(accepted[-1]["payload"]["embeds"][0]).replace("\\\\", ""))  # drop markdown escapes
print(embed["title"])
print(embed.get("description", ""))
for field in embed.get("fields", []):
    print(f"- {field['name']}: {field['value']}")
PY
