# The front door. Every target installs what is missing first (scripts/setup-deps).
#   make          build everything into build/
#   make demo     boot the test guest and drive it over QMP
#   make check    every test (unit and fuzz corpus under ASan/UBSan), one summary line
#   make bench    godwit beside QEMU 7.2, same guest, same run: tables, plots and
#                 docs/benchmarks.md (quick set, under 10 minutes; scripts/setup-deps --bench)
#   make bench-full  the same with 2 GiB and 4 GiB guests as well
#   make fuzz     libFuzzer on every parser for FUZZ_SECONDS each (clang)
#   make soak     one guest migrated back and forth SOAK_HOPS times, checked at every hop

BUILD      ?= build
SAN_BUILD  ?= build-san
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
SOAK_HOPS  ?= 300
MESON      ?= meson
NINJA      ?= ninja

.PHONY: all deps demo check check-build bench fuzz soak clean

all: deps
	@test -f $(BUILD)/build.ninja || $(MESON) setup $(BUILD) >/dev/null
	$(NINJA) -C $(BUILD)

deps:
	@scripts/setup-deps

demo: all
	python3 scripts/demo --vm $(BUILD)/vm/godwit-vm --guest $(BUILD)/guest/testguest.elf \
		--godwit $(BUILD)/tools/godwit

# The sanitizer build runs every test: the unit tests and corpus replays, and
# the integration tests drive the sanitized godwit-vm too. build/ is built as
# well, so a -Werror failure there cannot hide.
check-build: all
	@test -f $(SAN_BUILD)/build.ninja || \
		$(MESON) setup $(SAN_BUILD) -Dsanitize=address,undefined >/dev/null
	$(NINJA) -C $(SAN_BUILD)

check: check-build
	@rc=0; ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		$(MESON) test -C $(SAN_BUILD) --print-errorlogs || rc=$$?; \
		python3 scripts/test-summary $(SAN_BUILD)/meson-logs/testlog.json || rc=1; \
		exit $$rc

# bench/compare.py runs bench/guest_rates.py too, and its tables include
# godwit's predicted downtime and issue 4's targets.
BENCH_ARGS = --vm $(BUILD)/vm/godwit-vm --guest $(BUILD)/guest/testguest.elf

bench: all
	@scripts/setup-deps --bench
	python3 bench/compare.py $(BENCH_ARGS)

bench-full: all
	@scripts/setup-deps --bench
	python3 bench/compare.py --full $(BENCH_ARGS)

fuzz:
	@scripts/setup-deps --fuzz
	@test -f $(FUZZ_BUILD)/build.ninja || CC=clang $(MESON) setup $(FUZZ_BUILD) \
		-Dfuzzing=true -Dsanitize=address,undefined -Dtests=disabled >/dev/null
	$(NINJA) -C $(FUZZ_BUILD)
	@for target in qmp multiboot uri_size stream multifd; do \
		mkdir -p $(FUZZ_BUILD)/corpus/$$target; \
		echo "== fuzz_$$target for $(FUZZ_SECONDS)s"; \
		$(FUZZ_BUILD)/tests/fuzz/fuzz_$$target -max_total_time=$(FUZZ_SECONDS) \
			-print_final_stats=1 $(FUZZ_BUILD)/corpus/$$target tests/fuzz/corpus/$$target \
			2>&1 | tail -12 || exit 1; \
	done
	@echo "New inputs are in $(FUZZ_BUILD)/corpus/; copy interesting ones to tests/fuzz/corpus/."

# The sanitizer build, so a memory error on any hop ends the soak.
soak: check-build
	python3 tests/soak/ping_pong.py --hops $(SOAK_HOPS) --vm $(SAN_BUILD)/vm/godwit-vm \
		--guest $(SAN_BUILD)/guest/testguest.elf

clean:
	rm -rf $(BUILD) $(SAN_BUILD) $(FUZZ_BUILD)
