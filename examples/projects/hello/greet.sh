#!/bin/sh
# Prints a greeting for each name given, or for the world.
[ "$#" -gt 0 ] || set -- world
for name in "$@"; do
    echo "$GREETING, $name!"
done
