"""libgodwit as another VMM gets it: `meson install` of the build under test
into a temporary DESTDIR, then tests/install/embed.c built out of tree with
nothing but `pkg-config godwit` and run against the installed libgodwit.so
(a two-engine migration in one process, and the errors an embedder meets
first). Also: the soname and what the library exports, that every
installed header compiles alone without our -D_GNU_SOURCE, and that the
installed man pages render and carry every option --help prints."""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD_ROOT = os.environ.get("GODWIT_BUILD_ROOT", os.path.join(SOURCE_ROOT, "build"))
MESON = os.environ.get("MESON", "meson")
CC = shlex.split(os.environ.get("CC", "cc"))
# The build's -fsanitize list. An instrumented libgodwit.so needs the
# sanitizer runtimes loaded first, which linking the program with the same
# -fsanitize does (gcc refuses to start otherwise; clang's runtime lives only
# in executables). A VMM embedding a sanitized build does the same; this is
# sturdier than LD_PRELOAD of a runtime whose name depends on the compiler.
SANITIZE = os.environ.get("GODWIT_SANITIZE", "")
# What embed.c and the header check are built with: plain ISO C, none of the
# feature macros our own build defines.
CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror"]


def run(cmd, env=None, check=True):
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{shlex.join(cmd)} exited {result.returncode}:\n"
                             f"{result.stdout}{result.stderr}")
    return result


def find(root, name):
    for directory, _, files in os.walk(root):
        if name in files:
            return os.path.join(directory, name)
    raise AssertionError(f"{name} is not installed (looked under {root})")


class Installed(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="godwit-install-")
        cls.destdir = os.path.join(cls.tmp, "root")
        # --no-rebuild: meson test has just built every target of this build.
        run([MESON, "install", "-C", BUILD_ROOT, "--destdir", cls.destdir, "--no-rebuild",
             "--quiet"])
        cls.pc = find(cls.destdir, "godwit.pc")
        # The .pc names the final prefix (/usr/local); the sysroot puts its
        # -I and -L paths under DESTDIR, as for any staged install. It also
        # prefixes jansson's system paths with a directory that does not
        # exist, which the compiler ignores: jansson is found where it is.
        cls.env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(cls.pc),
                       PKG_CONFIG_SYSROOT_DIR=cls.destdir)
        cls.cflags = shlex.split(run(["pkg-config", "--cflags", "godwit"], cls.env).stdout)
        cls.libs = shlex.split(run(["pkg-config", "--libs", "godwit"], cls.env).stdout)
        cls.libdirs = [flag[2:] for flag in cls.libs if flag.startswith("-L")]
        cls.include = os.path.join(os.path.dirname(find(cls.destdir, "migration.h")))
        cls.sanitize = [f"-fsanitize={SANITIZE}"] if SANITIZE else []

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_versioned_shared_library(self):
        version = run(["pkg-config", "--modversion", "godwit"], self.env).stdout.strip()
        real = find(self.destdir, f"libgodwit.so.{version}")
        libdir = os.path.dirname(real)
        self.assertIn(libdir, self.libdirs)
        self.assertEqual(os.readlink(os.path.join(libdir, "libgodwit.so.0")),
                         f"libgodwit.so.{version}")
        self.assertEqual(os.path.realpath(os.path.join(libdir, "libgodwit.so")),
                         os.path.realpath(real))
        dynamic = run(["readelf", "-d", real]).stdout
        self.assertIn("Library soname: [libgodwit.so.0]", dynamic)
        self.assertFalse(os.path.exists(os.path.join(libdir, "libgodwit.a")),
                         "only the shared library is for embedders")

    def test_exports_only_the_public_headers(self):
        real = os.path.realpath(find(self.destdir, "libgodwit.so.0"))
        symbols = {line.split()[-1] for line in
                   run(["nm", "-D", "--defined-only", real]).stdout.splitlines()}
        headers = ""
        for name in os.listdir(self.include):
            with open(os.path.join(self.include, name), encoding="utf-8") as f:
                headers += f.read()
        declared = set(re.findall(r"\w+", headers))
        self.assertIn("migration_new", symbols)
        self.assertIn("uri_accepted_forms", symbols)   # an object, not a function
        self.assertEqual(sorted(symbols - declared), [],
                         "exported but declared in no installed header")

    def test_headers_are_the_public_ones_and_stand_alone(self):
        ours = sorted(f for f in os.listdir(os.path.join(SOURCE_ROOT, "include", "godwit"))
                      if f.endswith(".h"))
        self.assertEqual(sorted(os.listdir(self.include)), ours)
        for name in ours:
            with self.subTest(header=name):
                with open(os.path.join(self.include, name), encoding="utf-8") as f:
                    for include in re.findall(r"^\s*#\s*include\s*(\S+)", f.read(), re.M):
                        # <godwit/x.h> must be installed; anything else is the system's.
                        self.assertTrue(include.startswith("<"), f"{name} includes {include}")
                        if include.startswith("<godwit/"):
                            self.assertIn(include[8:-1], ours)
                unit = os.path.join(self.tmp, f"only_{name}.c")
                with open(unit, "w", encoding="utf-8") as f:
                    f.write(f"#include <godwit/{name}>\n")
                run(CC + CFLAGS + ["-fsyntax-only", unit] + self.cflags)

    def test_embed_builds_out_of_tree_and_migrates(self):
        source = os.path.join(HERE, "embed.c")
        with open(source, encoding="utf-8") as f:
            includes = re.findall(r"^\s*#\s*include\s*(\S+)", f.read(), re.M)
        self.assertTrue(all(i.startswith("<") and "src/" not in i for i in includes),
                        includes)
        self.assertIn("<godwit/migration.h>", includes)
        # Only what pkg-config says: nothing of this source tree or its builds.
        for flag in self.cflags + self.libs:
            self.assertFalse(flag.startswith(("-I" + SOURCE_ROOT, "-L" + SOURCE_ROOT)), flag)
        program = os.path.join(self.tmp, "embed")
        run(CC + CFLAGS + self.sanitize + ["-o", program, source] + self.cflags + self.libs)
        env = dict(os.environ, LD_LIBRARY_PATH=":".join(self.libdirs))
        loaded = run(["ldd", program], env).stdout
        self.assertRegex(loaded, r"libgodwit\.so\.0 => " + re.escape(self.destdir))
        socket_dir = tempfile.mkdtemp(dir=self.tmp)
        result = run([program, socket_dir], env, check=False)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertRegex(result.stdout, r"bad block: RAM block 'odd': .*page size")
        self.assertRegex(result.stdout, r"bad parameter: .*'downtime-limit'.* 0 to ")
        self.assertRegex(result.stdout, r"bad URI: .*accepted forms are tcp:")
        self.assertIn("migrated 256 KiB, one page written again after it was sent, and the "
                      "counter", result.stdout)

    def test_man_pages(self):
        bindir = os.path.dirname(find(self.destdir, "godwit-vm"))
        pages = {"godwit": ["", "migrate", "status"], "godwit-vm": [""]}
        try:
            find(self.destdir, "godwit.1")
        except AssertionError:
            self.skipTest("no man pages: meson found no help2man (scripts/setup-deps "
                          "installs it)")
        for name, commands in pages.items():
            with self.subTest(page=name):
                page = find(self.destdir, f"{name}.1")
                self.assertEqual(os.path.basename(os.path.dirname(page)), "man1")
                text = self.render(page)
                self.assertRegex(text, rf"NAME\s+{re.escape(name)} - \w")
                for command in commands:
                    args = [os.path.join(bindir, name)] + ([command] if command else [])
                    help_text = run(args + ["--help"]).stdout
                    options = re.findall(r"^ {2}(?:-\w, )?(--[\w-]+)", help_text, re.M)
                    self.assertGreater(len(options), 1, help_text)
                    for option in options:
                        self.assertRegex(text, rf"(?m)^ +(-\w, )?{option}\b",
                                         f"{name}.1 {command} lacks {option}")
                    if command:
                        self.assertIn(f"{name.upper()} {command.upper()}", text)

    @staticmethod
    def render(page):
        """The page as man shows it, with lines long enough and hyphenation
        off so that no option is split; or its source with the escapes
        undone where groff is missing."""
        if shutil.which("groff"):
            result = run(["groff", "-man", "-Tutf8", "-ww", "-rLL=300n", "-rHY=0",
                          "-P-cbou", page])
            if result.stderr:
                raise AssertionError(f"groff warns about {page}:\n{result.stderr}")
            return result.stdout
        with open(page, encoding="utf-8") as f:
            source = f.read()
        return re.sub(r"\\f[BIRP]", "", source).replace("\\-", "-").replace(".TP\n", "  ")


if __name__ == "__main__":
    tap.main()
