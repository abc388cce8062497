"""The project's tests: `den run test` runs them inside the container."""

import os
import platform
import unittest

from greet import greetings


class GreetTest(unittest.TestCase):
    def test_greets_the_world(self):
        self.assertEqual(greetings([]), ["Hello, world!"])

    def test_greets_each_name(self):
        self.assertEqual(greetings(["Ada", "Grace"]), ["Hello, Ada!", "Hello, Grace!"])

    def test_runs_in_the_project(self):
        self.assertEqual(os.getcwd(), "/work")

    def test_runs_as_container_root(self):
        self.assertEqual(os.getuid(), 0)

    def test_runs_debians_python(self):
        self.assertEqual(platform.python_version_tuple()[:2], ("3", "11"))
        with open("/etc/os-release") as release:
            self.assertIn('VERSION_CODENAME=bookworm', release.read())


if __name__ == "__main__":
    unittest.main()
