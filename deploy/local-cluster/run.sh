#!/usr/bin/env bash
# The docker-compose topology without Docker: two bridge processes on this
# machine's PostgreSQL (a fresh database per run) behind a local nginx, a fake
# HSS, N signed webhooks through the balancer, then the proof: exactly ONE
# batch-scan request for the window, carrying every pushed image once.
#
# It runs the compose files themselves: deploy/compose/bridge.toml (with
# environment overrides for addresses and the window) and deploy/compose/nginx.conf
# (upstream and listen addresses rewritten to 127.0.0.1). All traffic stays on
# 127.0.0.1; every process it starts is stopped on exit, and the database dropped.
#
# Usage: deploy/local-cluster/run.sh
# Environment (all optional):
#   LC_PUSHES=20          webhooks to send (each names 2 tags, and each is sent twice)
#   LC_WINDOW_MS=5000     batch.window_ms for the run
#   LC_RELEASE=1          build with --release instead of the debug profile
#   SWR_SCAN_BRIDGE_BIN   use this binary instead of building one
#   LC_PG_HOST=127.0.0.1 LC_PG_PORT=5432 LC_PG_USER=postgres
#   LC_KEEP=1             keep the work directory (logs, configs) after the run
# Needs: cargo (unless SWR_SCAN_BRIDGE_BIN), python3, curl, createdb/dropdb/pg_isready,
# nginx (installed with apt-get when missing and running as root).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

pushes=${LC_PUSHES:-20}
window_ms=${LC_WINDOW_MS:-5000}
pg_host=${LC_PG_HOST:-127.0.0.1}
pg_port=${LC_PG_PORT:-5432}
pg_user=${LC_PG_USER:-postgres}

case "$pushes" in '' | *[!0-9]*) echo "LC_PUSHES must be a number" >&2; exit 2 ;; esac
# Two images per push must fit in one batch (batch.max_images = 100 in compose/bridge.toml).
if [ "$pushes" -lt 1 ] || [ "$pushes" -gt 50 ]; then
    echo "LC_PUSHES must be between 1 and 50" >&2
    exit 2
fi

passed=0
failed=0
work=$(mktemp -d "${TMPDIR:-/tmp}/swr-bridge-lc.XXXXXX")
database=""
pids=()

say() { printf 'local-cluster: %s\n' "$*" >&2; }
# check PASS_TEXT FAIL_TEXT COMMAND...: runs COMMAND (with this call's stdin)
# and counts and reports the result.
check() {
    local pass_text=$1 fail_text=$2
    shift 2
    if "$@"; then
        passed=$((passed + 1))
        say "PASS $pass_text"
    else
        failed=$((failed + 1))
        say "FAIL $fail_text"
    fi
}

cleanup() {
    local status=$?
    set +e
    # Stop what this script started, newest first, each by its own pid.
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null
    done
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        for _ in $(seq 1 100); do
            kill -0 "${pids[i]}" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "${pids[i]}" 2>/dev/null
        wait "${pids[i]}" 2>/dev/null
    done
    if [ -n "$database" ]; then
        dropdb --if-exists --force -h "$pg_host" -p "$pg_port" -U "$pg_user" "$database" \
            || say "could not drop database $database"
    fi
    if [ "${LC_KEEP:-0}" = 1 ] || [ "$status" -ne 0 ]; then
        say "logs and configs kept in $work"
        if [ "$status" -ne 0 ]; then
            for log in "$work"/*.log; do
                [ -f "$log" ] || continue
                say "---- last lines of $(basename "$log")"
                tail -n 25 "$log" >&2
            done
        fi
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { say "ERROR: $*"; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_for URL EXPECTED_STATUS SECONDS [PID]: gives up early when PID has exited.
wait_for() {
    local url=$1 want=$2 limit=$3 pid=${4:-} code=""
    for _ in $(seq 1 $((limit * 5))); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -m 2 "$url" || true)
        [ "$code" = "$want" ] && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            say "the process behind $url exited"
            return 1
        fi
        sleep 0.2
    done
    say "$url answered ${code:-nothing}, not $want, within ${limit}s"
    return 1
}

# ---- tools ----------------------------------------------------------------
for tool in python3 curl createdb dropdb pg_isready; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    [ "$(id -u)" = 0 ] || die "nginx is missing; install it (apt-get install nginx) or run as root"
    say "installing nginx from Debian packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    # policy-rc.d on container images keeps the packaged service from starting;
    # this script runs its own nginx with its own config either way.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >&2
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

# ---- binary ---------------------------------------------------------------
if [ -n "${SWR_SCAN_BRIDGE_BIN:-}" ]; then
    bridge_bin=$SWR_SCAN_BRIDGE_BIN
else
    profile_flag=()
    profile_dir=debug
    if [ "${LC_RELEASE:-0}" = 1 ]; then
        profile_flag=(--release)
        profile_dir=release
    fi
    say "building swr-scan-bridge ($profile_dir)"
    (cd "$root" && cargo build --quiet --locked "${profile_flag[@]}" --bin swr-scan-bridge)
    bridge_bin="${CARGO_TARGET_DIR:-$root/target}/$profile_dir/swr-scan-bridge"
fi
[ -x "$bridge_bin" ] || die "no bridge binary at $bridge_bin"

# ---- PostgreSQL: a fresh database for this run -----------------------------
if ! pg_isready -q -h "$pg_host" -p "$pg_port"; then
    if [ -x "$root/.ci/start-postgres" ]; then
        "$root/.ci/start-postgres"
    fi
    pg_isready -q -h "$pg_host" -p "$pg_port" || die "PostgreSQL does not answer on $pg_host:$pg_port"
fi
database="bridge_lc_$(python3 -c 'import secrets; print(secrets.token_hex(6))')"
createdb -h "$pg_host" -p "$pg_port" -U "$pg_user" "$database"
say "database $database on $pg_host:$pg_port"

# ---- fake HSS ---------------------------------------------------------------
python3 "$here/fake_hss.py" --host 127.0.0.1 --port 0 --port-file "$work/hss.port" \
    --record "$work/hss-requests.jsonl" >"$work/fake-hss.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do [ -s "$work/hss.port" ] && break; sleep 0.1; done
[ -s "$work/hss.port" ] || die "the fake HSS did not start"
hss_port=$(tr -d '[:space:]' <"$work/hss.port")
wait_for "http://127.0.0.1:$hss_port/healthz" 200 10 "${pids[-1]}" || die "the fake HSS does not answer"

# ---- two bridges, compose/bridge.toml with local addresses -------------------
webhook_token=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
admin_token=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
project_id=$(sed -n 's/^project_id = "\(.*\)"$/\1/p' "$here/../compose/bridge.toml")
[ -n "$project_id" ] || die "cannot read hss.project_id from compose/bridge.toml"

bridge_ports=()
for replica in 1 2; do
    port=$(free_port)
    bridge_ports+=("$port")
    env \
        BRIDGE_DATABASE_URL="postgres://$pg_user@$pg_host:$pg_port/$database" \
        HUAWEICLOUD_SDK_AK=lc-access-key \
        HUAWEICLOUD_SDK_SK=lc-secret-key \
        SWR_WEBHOOK_TOKEN="$webhook_token" \
        BRIDGE_ADMIN_TOKEN="$admin_token" \
        HOSTNAME="lc-bridge-$replica" \
        SWR_SCAN_BRIDGE__SERVER__LISTEN="127.0.0.1:$port" \
        SWR_SCAN_BRIDGE__HSS__ENDPOINT="http://127.0.0.1:$hss_port" \
        SWR_SCAN_BRIDGE__BATCH__WINDOW_MS="$window_ms" \
        "$bridge_bin" serve --config "$here/../compose/bridge.toml" \
        >"$work/bridge-$replica.log" 2>&1 &
    pids+=($!)
done
bridge_pids=("${pids[@]: -2}")
for replica in 1 2; do
    wait_for "http://127.0.0.1:${bridge_ports[replica - 1]}/readyz" 200 60 "${bridge_pids[replica - 1]}" \
        || die "bridge-$replica is not ready (see bridge-$replica.log below)"
done
say "bridges ready on 127.0.0.1:${bridge_ports[0]} and 127.0.0.1:${bridge_ports[1]}"

# ---- nginx, compose/nginx.conf with local addresses ---------------------------
lb_port=$(free_port)
mkdir -p "$work/nginx"
sed -e "s|server bridge-1:8080|server 127.0.0.1:${bridge_ports[0]}|" \
    -e "s|server bridge-2:8080|server 127.0.0.1:${bridge_ports[1]}|" \
    -e "s|listen 8080;|listen 127.0.0.1:$lb_port;|" \
    -e "s|/tmp/|$work/nginx/|g" \
    "$here/../compose/nginx.conf" >"$work/nginx.conf"
# The rewrite must have found what it looks for, or nginx would run another topology.
for expected in "server 127.0.0.1:${bridge_ports[0]}" "server 127.0.0.1:${bridge_ports[1]}" \
    "listen 127.0.0.1:$lb_port;"; do
    grep -qF "$expected" "$work/nginx.conf" || die "compose/nginx.conf changed shape: no '$expected' after rewrite"
done
if grep -qE 'bridge-[0-9]+:|listen 8080' "$work/nginx.conf"; then
    die "compose/nginx.conf has upstreams or listeners this script does not rewrite"
fi
"$nginx_bin" -t -q -p "$work/nginx/" -c "$work/nginx.conf" -e stderr 2>"$work/nginx-test.log" \
    || { cat "$work/nginx-test.log" >&2; die "nginx rejects the rewritten compose/nginx.conf"; }
"$nginx_bin" -p "$work/nginx/" -c "$work/nginx.conf" -e stderr -g 'daemon off;' \
    >"$work/nginx-access.log" 2>"$work/nginx.log" &
pids+=($!)
lb="http://127.0.0.1:$lb_port"
wait_for "$lb/readyz" 200 20 "${pids[-1]}" || die "nginx does not reach a ready bridge"
say "nginx on $lb"

# ---- pushes -------------------------------------------------------------------
python3 - "$root/fixtures/swr-ee-push-artifact.json" "$work/bodies" "$pushes" <<'PY'
import copy, json, os, sys
fixture, out_dir, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(fixture, encoding="utf-8") as f:
    sample = json.load(f)
os.makedirs(out_dir, exist_ok=True)
repo = sample["event_data"]["repository"]["repo_full_name"]
for i in range(1, count + 1):
    body = copy.deepcopy(sample)
    for resource, tag in zip(body["event_data"]["resources"], (f"v1.{i}.0", f"build-{i}")):
        host = resource["resource_url"].split("/", 1)[0]
        resource["tag"] = tag
        resource["resource_url"] = f"{host}/{repo}:{tag}"
    body["occur_at"] += i
    with open(os.path.join(out_dir, f"push-{i}.json"), "w", encoding="utf-8") as f:
        json.dump(body, f)
PY

push() { # push BODY_FILE -> prints "STATUS BODY"
    curl -s -m 10 -o "$work/answer.json" -w '%{http_code}' \
        -H 'Content-Type: application/json' -H "Authorization: $webhook_token" \
        --data-binary "@$1" "$lb/webhooks/swr-ee"
    printf ' %s\n' "$(cat "$work/answer.json")"
}

say "pushing $pushes webhooks (2 tags each), each twice, through nginx; window ${window_ms} ms"
push_started=$(date +%s%N)
: >"$work/answers.txt"
for i in $(seq 1 "$pushes"); do
    # The second send of a body lands on the other replica (round robin): the
    # shared store must answer it as duplicates.
    echo "first $(push "$work/bodies/push-$i.json")" >>"$work/answers.txt"
    echo "again $(push "$work/bodies/push-$i.json")" >>"$work/answers.txt"
done
push_ms=$((($(date +%s%N) - push_started) / 1000000))
unauthorized=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    -H 'Authorization: wrong-token' --data-binary "@$work/bodies/push-1.json" "$lb/webhooks/swr-ee")

check "every push answered 202: first sends accepted 2 images each, repeats counted as 2 duplicates" \
    "webhook answers (see above)" \
    python3 - "$work/answers.txt" "$pushes" <<'PY'
import json, sys
path, count = sys.argv[1], int(sys.argv[2])
bad = []
lines = open(path, encoding="utf-8").read().splitlines()
if len(lines) != 2 * count:
    bad.append(f"{len(lines)} answers for {2 * count} sends")
for line in lines:
    kind, status, body = line.split(" ", 2)
    want = {"first": (2, 0), "again": (0, 2)}[kind]
    try:
        answer = json.loads(body)
    except ValueError:
        bad.append(f"{kind}: {status} {body!r}")
        continue
    if status != "202" or (answer.get("accepted"), answer.get("duplicates")) != want:
        bad.append(f"{kind}: {status} {body} (want 202 accepted={want[0]} duplicates={want[1]})")
for b in bad[:10]:
    print("  " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
check "a wrong token is refused with 401 through the balancer" \
    "a wrong token got $unauthorized, not 401" \
    [ "$unauthorized" = 401 ]
upstreams=$(grep -o 'POST /webhooks/swr-ee[^"]*" 202 upstream=[0-9.:]*' "$work/nginx-access.log" \
    | sed 's/.*upstream=//' | sort -u | wc -l)
check "nginx spread the webhooks over both replicas" \
    "accepted webhooks went to $upstreams replica(s), not 2" \
    [ "$upstreams" -eq 2 ]
if [ "$push_ms" -ge "$window_ms" ]; then
    die "pushing took ${push_ms} ms, longer than the ${window_ms} ms window: one request per window cannot be shown; raise LC_WINDOW_MS"
fi

# ---- the proof: one request for the window ------------------------------------
# The batch is due window_ms after the first push; wait for a request, then
# a further window and a margin, so a second request would have time to show.
deadline=$((SECONDS + window_ms / 1000 + 30))
while [ "$SECONDS" -lt "$deadline" ] && [ ! -s "$work/hss-requests.jsonl" ]; do sleep 0.2; done
[ -s "$work/hss-requests.jsonl" ] || die "no batch-scan request reached the fake HSS within $((window_ms / 1000 + 30))s"
sleep $((window_ms / 1000 + 3))

check "exactly one batch-scan request for the window, carrying all $((pushes * 2)) images once" \
    "HSS requests (see above)" \
    python3 - "$work/hss-requests.jsonl" "$work/bodies" "$pushes" "$project_id" <<'PY'
import json, os, sys
path, bodies, count, project_id = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
requests = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
problems = []
if len(requests) != 1:
    problems.append(f"{len(requests)} batch-scan requests, want 1")
expected = set()
for i in range(1, count + 1):
    body = json.load(open(os.path.join(bodies, f"push-{i}.json"), encoding="utf-8"))
    repo = body["event_data"]["repository"]
    name = repo["repo_full_name"][len(repo["namespace"]) + 1:]
    for resource in body["event_data"]["resources"]:
        expected.add((repo["namespace"], name, resource["tag"]))
for request in requests[:1]:
    if request["problems"]:
        problems.append("malformed request: " + "; ".join(request["problems"]))
    if request["project_id"] != project_id:
        problems.append(f"project_id {request['project_id']}, want {project_id}")
    if request["query"].get("enterprise_project_id") != "0":
        problems.append(f"query {request['query']}, want enterprise_project_id=0")
    if request["authorization_scheme"] != "SDK-HMAC-SHA256":
        problems.append(f"authorization scheme {request['authorization_scheme']!r}")
    body = request["body"] or {}
    if body.get("image_type") != "instance_image":
        problems.append(f"image_type {body.get('image_type')!r}")
    items = body.get("image_info_list") or []
    seen = [(i.get("namespace"), i.get("image_name"), i.get("image_version")) for i in items]
    if len(seen) != len(set(seen)):
        problems.append(f"{len(seen) - len(set(seen))} image(s) listed twice")
    if set(seen) != expected:
        problems.append(f"images differ: missing {sorted(expected - set(seen))[:5]}, unexpected {sorted(set(seen) - expected)[:5]}")
    for item in items:
        if item.get("instance_id") != "4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6" or not item.get("instance_url"):
            problems.append(f"item without the source's instance_id/instance_url: {item}")
            break
for p in problems:
    print("  " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY

# ---- drain: SIGTERM ends each bridge cleanly within its grace -----------------
for replica in 1 2; do
    pid=${bridge_pids[replica - 1]}
    kill -TERM "$pid"
    status=timeout
    for _ in $(seq 1 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" && status=0 || status=$?
            break
        fi
        sleep 0.1
    done
    check "bridge-$replica drained and exited 0 on SIGTERM" \
        "bridge-$replica on SIGTERM: exit status $status" \
        [ "$status" = 0 ]
done

echo "local-cluster: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
