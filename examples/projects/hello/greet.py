"""Greets the people named on the command line, or the world."""

import os
import sys


def greetings(names):
    greeting = os.environ.get("GREETING", "Hello")
    return [f"{greeting}, {name}!" for name in names or ["world"]]


if __name__ == "__main__":
    print("\n".join(greetings(sys.argv[1:])))
