#!/bin/sh
# The project's tests: run inside the container by `den run test`.
failed=0
check() {
    if [ "$2" = "$3" ]; then echo "ok   $1"; else echo "FAIL $1: expected '$3', got '$2'"; failed=1; fi
}
check "greets the world" "$(sh greet.sh)" "Hello, world!"
check "greets by name" "$(sh greet.sh Ada)" "Hello, Ada!"
check "greets each name" "$(sh greet.sh Ada Grace | wc -l)" "2"
check "runs in /work" "$(pwd)" "/work"
check "runs as container root" "$(id -u)" "0"
[ "$failed" -eq 0 ] && echo "all tests passed"
exit "$failed"
