#!/bin/sh
# Drive an engine from the shell with `iii-trio trigger`: start the dev engine, then set and
# read a value through its built-in state worker, which needs no code of your own.
#
#   sh examples/cli_trigger.sh        (with iii-trio on PATH, e.g. after . .venv/bin/activate)
set -eu
PORT=${PORT:-49177}
iii-trio dev --port "$PORT" 2>/dev/null &
ENGINE=$!
trap 'kill "$ENGINE"' EXIT

# Wait until the engine answers (a few tenths of a second).
tries=0
until iii-trio trigger engine::health::check --port "$PORT" --timeout-ms 500 >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -lt 50 ] || { echo "the dev engine did not start" >&2; exit 1; }
    sleep 0.1
done

iii-trio trigger state::set --port "$PORT" scope=greetings key=en 'value="hello"'
iii-trio trigger state::get --port "$PORT" scope=greetings key=en
iii-trio trigger state::list --port "$PORT" scope=greetings
