"""The memory checker the integration and migration tests trust: it must
accept what a stopped dirty guest leaves and reject lost or stale pages."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from godwit_vm import PAGE_SIZE, check_increment_pattern  # noqa: E402
import unittest  # noqa: E402


def pages(values):
    return b"".join(bytes([v]) + bytes(PAGE_SIZE - 1) for v in values)


class Checker(unittest.TestCase):
    def test_accepts_all_equal_and_one_edge(self):
        self.assertEqual(check_increment_pattern(pages([5] * 10)), 0)
        self.assertEqual(check_increment_pattern(pages([6] * 4 + [5] * 6)), 1)
        self.assertEqual(check_increment_pattern(pages([0] * 3 + [255] * 7)), 1)  # wraps

    def test_rejects_a_stale_page(self):
        with self.assertRaises(AssertionError):
            check_increment_pattern(pages([6, 6, 5, 6, 5, 5]))   # two edges

    def test_rejects_a_lost_page(self):
        with self.assertRaises(AssertionError):
            check_increment_pattern(pages([6, 6, 0, 6, 6]))

    def test_rejects_a_page_ahead(self):
        with self.assertRaises(AssertionError):
            check_increment_pattern(pages([5, 5, 6, 5]))


if __name__ == "__main__":
    tap.main()
