"""Runs unittest test cases and prints TAP, so meson counts every case.

A test that cannot run here (no /dev/kvm, no QEMU) calls self.skipTest with
the reason; TAP reports it as '# SKIP reason', never as a pass."""
import os
import sys
import time
import traceback
import unittest


class TapResult(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.number = 0
        self.started = 0.0
        self._subtest_failures = {}
        self._reported = set()

    def startTest(self, test):
        super().startTest(test)
        self.started = time.monotonic()

    def _line(self, status, test, directive=""):
        self._reported.add(test.id())
        self.number += 1
        elapsed = time.monotonic() - self.started
        name = test.id().split(".")[-1]
        print(f"{status} {self.number} - {name} ({elapsed:.2f}s){directive}", flush=True)

    def _diagnose(self, err):
        for line in "".join(traceback.format_exception(*err)).splitlines():
            print(f"# {line}")
        sys.stdout.flush()

    def addSuccess(self, test):
        super().addSuccess(test)
        self._line("ok", test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._line("not ok", test)
        self._diagnose(err)

    def addError(self, test, err):
        super().addError(test, err)
        self._line("not ok", test)
        self._diagnose(err)

    def addSubTest(self, test, subtest, err):
        # A failing subTest fails its test: one 'not ok' line, every failure
        # as diagnostics (unittest's own runner would count them too).
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._subtest_failures.setdefault(test.id(), []).append((subtest, err))

    def stopTest(self, test):
        failures = self._subtest_failures.pop(test.id(), None)
        if failures and test.id() not in self._reported:
            self._line("not ok", test)
            for subtest, err in failures:
                print(f"# in {subtest.id()}")
                self._diagnose(err)
        super().stopTest(test)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._line("ok", test, f" # SKIP {reason}")


def _skip_named(suite):
    """GODWIT_TEST_SKIP=name,name: those cases report SKIP, never pass; for
    a run whose slowness alone fails them (make tsan, which says why)."""
    names = {n.strip() for n in os.environ.get("GODWIT_TEST_SKIP", "").split(",") if n.strip()}
    stack = [suite]
    while stack:
        for test in stack.pop():
            if isinstance(test, unittest.TestSuite):
                stack.append(test)
            elif test._testMethodName in names:
                method = getattr(type(test), test._testMethodName)
                setattr(type(test), test._testMethodName,
                        unittest.skip(f"{test._testMethodName} is named in "
                                      "GODWIT_TEST_SKIP")(method))


def main(module_name="__main__"):
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[module_name])
    _skip_named(suite)
    print(f"1..{suite.countTestCases()}", flush=True)
    result = TapResult()
    suite.run(result)
    sys.exit(0 if result.wasSuccessful() else 1)
