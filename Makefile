# opstate — the primary build. `make test` installs its Debian dependencies
# (scripts/deps.sh), builds and runs every suite, and ends with one line
# "N passed, N failed".

CC      ?= cc
CLANG   ?= clang
BUILD   ?= build
WARN     = -Wall -Wextra -Wpedantic -Werror
LIBWARN  = $(WARN) -Wconversion -Wsign-conversion -Wcast-qual -Wundef -Wstrict-prototypes
CFLAGS  ?= -O2 -g
STD     ?= -std=c99
# The sanitizer build (unit, LMDB and NATS suites, the tool, kill9, fuzz replays).
SAN      = -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

HEADERS    = opstate.h opstate_lmdb.h opstate_nats.h
POSIX      = -D_POSIX_C_SOURCE=200809L
# Core tests need nothing but a C compiler; LMDB tests (tests/test_lmdb*.c)
# link with -llmdb and live in their own program.
LMDB_SRCS  = $(wildcard tests/test_lmdb*.c)
# NATS tests (tests/test_nats*.c) start a real nats-server; -lnats.
NATS_SRCS  = $(wildcard tests/test_nats*.c)
TEST_SRCS  = $(filter-out tests/impl.c tests/impl_lmdb.c tests/impl_nats.c tests/main.c $(LMDB_SRCS) $(NATS_SRCS),$(wildcard tests/*.c))
FUZZ_NAMES = $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TIME ?= 60
# The command-line tool: one program of several files (tools/opstate/main.c
# has its guide; impl.c compiles the three headers' implementations).
TOOL_SRCS  = $(wildcard tools/opstate/*.c)
TOOL_DEPS  = $(TOOL_SRCS) tools/opstate/tool.h $(HEADERS)

.PHONY: all test unit demo demo-nats fuzz bench bench-memcap clean deps chaos mutate install uninstall

all: $(BUILD)/unit $(BUILD)/opstate

# The command-line tool (LMDB and NATS logs, LMDB state stores).
$(BUILD)/opstate: $(TOOL_DEPS)
	@mkdir -p $(BUILD)
	$(CC) $(STD) -O2 $(POSIX) $(WARN) -I. $(TOOL_SRCS) -llmdb -lnats -o $@

# The same under ASan+UBSan (make test runs the CLI tests over it too).
$(BUILD)/opstate-asan: $(TOOL_DEPS)
	@mkdir -p $(BUILD)
	$(CC) $(STD) $(SAN) $(POSIX) $(WARN) -I. $(TOOL_SRCS) -llmdb -lnats -o $@

deps:
	@bash scripts/deps.sh

# The man page, opstate(1): the tool's --help and each command's --help,
# turned into roff by scripts/manpage.sh.
$(BUILD)/opstate.1: $(BUILD)/opstate scripts/manpage.sh
	bash scripts/manpage.sh $(BUILD)/opstate $@

# make install [PREFIX=/usr/local] [DESTDIR=staging/]: the three headers
# into include/, the tool into bin/ and its man page into share/man/man1,
# then from the templates in packaging/ (which CMakeLists.txt installs too):
# opstate.pc, opstate-lmdb.pc, opstate-nats.pc into share/pkgconfig
# (header-only: nothing in lib/) and opstateConfig.cmake +
# opstateConfigVersion.cmake into share/cmake/opstate, for
# find_package(opstate). BINDIR and MANDIR may move; the .pc and CMake
# files find the headers in PREFIX/include. make uninstall removes it all.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
INSTALL ?= install
PKGCONFIGDIR = $(PREFIX)/share/pkgconfig
CMAKEDIR     = $(PREFIX)/share/cmake/opstate
PC_FILES     = $(patsubst packaging/%.in,%,$(wildcard packaging/*.pc.in))
CMAKE_FILES  = $(patsubst packaging/%.in,%,$(wildcard packaging/*.cmake.in))
# The version, from opstate.h (the one source of truth).
opstate_version = $(shell sed -n 's/^.define OPSTATE_VERSION_$(1) \([0-9][0-9]*\).*/\1/p' opstate.h)
OPSTATE_VERSION_MAJOR = $(call opstate_version,MAJOR)
OPSTATE_VERSION = $(OPSTATE_VERSION_MAJOR).$(call opstate_version,MINOR).$(call opstate_version,PATCH)
# What CMake's configure_file(@ONLY) fills in the templates, the same way.
PACKAGING_SED = sed -e 's|@prefix@|$(PREFIX)|g' -e 's|@OPSTATE_VERSION@|$(OPSTATE_VERSION)|g' \
    -e 's|@OPSTATE_VERSION_MAJOR@|$(OPSTATE_VERSION_MAJOR)|g'

install: $(BUILD)/opstate $(BUILD)/opstate.1
	@mkdir -p $(BUILD)/packaging
	for f in $(PC_FILES) $(CMAKE_FILES); do $(PACKAGING_SED) packaging/$$f.in > $(BUILD)/packaging/$$f || exit 1; done
	$(INSTALL) -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
	    $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(CMAKEDIR)
	$(INSTALL) -m 644 $(HEADERS) $(DESTDIR)$(PREFIX)/include
	$(INSTALL) -m 755 $(BUILD)/opstate $(DESTDIR)$(BINDIR)
	$(INSTALL) -m 644 $(BUILD)/opstate.1 $(DESTDIR)$(MANDIR)/man1
	$(INSTALL) -m 644 $(addprefix $(BUILD)/packaging/,$(PC_FILES)) $(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 644 $(addprefix $(BUILD)/packaging/,$(CMAKE_FILES)) $(DESTDIR)$(CMAKEDIR)

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/include/,$(HEADERS)) $(DESTDIR)$(BINDIR)/opstate \
	    $(DESTDIR)$(MANDIR)/man1/opstate.1 $(addprefix $(DESTDIR)$(PKGCONFIGDIR)/,$(PC_FILES)) \
	    $(addprefix $(DESTDIR)$(CMAKEDIR)/,$(CMAKE_FILES))
	rmdir $(DESTDIR)$(CMAKEDIR) 2>/dev/null || true

# One unit-test binary per build flavour: impl.c carries the library with the
# strict library warnings; the tests use the normal strict set.
$(BUILD)/%/impl.o: tests/impl.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(CFLAGS) $(LIBWARN) $(XFLAGS) -c $< -o $@

$(BUILD)/unit: $(TEST_SRCS) tests/main.c $(wildcard tests/*.h) $(BUILD)/plain/impl.o
	$(CC) $(STD) $(CFLAGS) $(WARN) $(TEST_SRCS) tests/main.c $(BUILD)/plain/impl.o -o $@

$(BUILD)/nohw/impl.o: XFLAGS = -DOPSTATE_NO_HW_CRC
$(BUILD)/unit-nohw: $(TEST_SRCS) tests/main.c $(wildcard tests/*.h) $(BUILD)/nohw/impl.o
	$(CC) $(STD) $(CFLAGS) $(WARN) $(TEST_SRCS) tests/main.c $(BUILD)/nohw/impl.o -o $@

# The portable CRC32C from its 64-byte table (no CRC instructions either).
$(BUILD)/smallcrc/impl.o: XFLAGS = -DOPSTATE_CRC_SMALL -DOPSTATE_NO_HW_CRC
$(BUILD)/unit-smallcrc: $(TEST_SRCS) tests/main.c $(wildcard tests/*.h) $(BUILD)/smallcrc/impl.o
	$(CC) $(STD) $(CFLAGS) $(WARN) $(TEST_SRCS) tests/main.c $(BUILD)/smallcrc/impl.o -o $@

$(BUILD)/unit-asan: $(TEST_SRCS) tests/main.c $(wildcard tests/*.h) tests/impl.c $(HEADERS)
	@mkdir -p $(BUILD)
	$(CC) $(STD) $(SAN) $(WARN) $(TEST_SRCS) tests/main.c tests/impl.c -o $@

$(BUILD)/lmdb/impl_lmdb.o: tests/impl_lmdb.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(POSIX) $(CFLAGS) $(LIBWARN) -c $< -o $@

$(BUILD)/unit-lmdb: $(LMDB_SRCS) tests/main.c tests/runner.h tests/*.h $(BUILD)/lmdb/impl_lmdb.o
	$(CC) $(STD) $(POSIX) $(CFLAGS) $(WARN) $(LMDB_SRCS) tests/main.c $(BUILD)/lmdb/impl_lmdb.o -llmdb -o $@

$(BUILD)/unit-lmdb-asan: $(LMDB_SRCS) tests/main.c tests/runner.h tests/*.h tests/impl_lmdb.c $(HEADERS)
	@mkdir -p $(BUILD)
	$(CC) $(STD) $(POSIX) $(SAN) $(WARN) $(LMDB_SRCS) tests/main.c tests/impl_lmdb.c -llmdb -o $@

$(BUILD)/nats/impl_nats.o: tests/impl_nats.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(POSIX) $(CFLAGS) $(LIBWARN) -c $< -o $@

$(BUILD)/unit-nats: $(NATS_SRCS) tests/main.c tests/runner.h tests/*.h $(BUILD)/nats/impl_nats.o
	$(CC) $(STD) $(POSIX) $(CFLAGS) $(WARN) $(NATS_SRCS) tests/main.c $(BUILD)/nats/impl_nats.o -lnats -o $@

$(BUILD)/unit-nats-asan: $(NATS_SRCS) tests/main.c tests/runner.h tests/*.h tests/impl_nats.c $(HEADERS)
	@mkdir -p $(BUILD)
	$(CC) $(STD) $(POSIX) $(SAN) $(WARN) $(NATS_SRCS) tests/main.c tests/impl_nats.c -lnats -o $@

$(BUILD)/kill9: tests/chaos/kill9.c $(HEADERS)
	@mkdir -p $(BUILD)
	$(CC) $(STD) $(POSIX) -O2 $(WARN) -I. $< -llmdb -o $@

$(BUILD)/kill9-asan: tests/chaos/kill9.c $(HEADERS)
	@mkdir -p $(BUILD)
	$(CC) $(STD) $(POSIX) $(SAN) $(WARN) -I. $< -llmdb -o $@

$(BUILD)/cluster_chaos: tests/chaos/cluster.c tests/nats_cluster.h tests/nats_server.h $(HEADERS)
	@mkdir -p $(BUILD)
	$(CC) $(STD) $(POSIX) -O2 $(WARN) -I. $< -lnats -llmdb -lpthread -o $@

# Storage damage: every byte of a small LMDB log and state store flipped, the
# files cut at every page boundary; --quick (or QUICK=1) for every 37th byte.
$(BUILD)/storage_chaos: tests/chaos/storage.c $(HEADERS)
	@mkdir -p $(BUILD)
	$(CC) $(STD) $(POSIX) -O2 $(WARN) -I. $< -llmdb -o $@

# Long chaos (bounded, loopback only, seed printed): kill -9 of a consuming
# process 200+ times, then >= 50 leader kills on a three-node JetStream
# cluster with an R3 stream (~8 min), then every byte of an LMDB log and a
# state store flipped (tests/chaos/storage.c, ~10 min without hangs).
# CHAOS_ARGS="--seed S" repeats a cluster run.
# make chaos QUICK=1: the short runs make test does (about 2 minutes).
chaos: deps $(BUILD)/kill9 $(BUILD)/cluster_chaos $(BUILD)/storage_chaos
	./$(BUILD)/kill9
	./$(BUILD)/cluster_chaos $(if $(QUICK),,--long) $(CHAOS_ARGS)
	./$(BUILD)/storage_chaos $(if $(QUICK),--quick)

unit: $(BUILD)/unit
	./$(BUILD)/unit $(FILTER)

# Fuzz targets: the same source builds a seed-replay program (plain main) and
# a libFuzzer binary (clang). FUZZ_LINK is what a target is built with
# besides its source: the core's implementation; lmdb_* targets the LMDB
# companion's too; nats_* targets compile the implementations themselves
# (they call its private functions) and cli_* targets link every file of
# the tool but its main (tools/opstate/impl.c holds every implementation).
FUZZ_LINK = tests/impl.c
$(BUILD)/fuzz-lmdb_% $(BUILD)/fuzz-replay-lmdb_%: FUZZ_LINK = $(POSIX) tests/impl_lmdb.c -llmdb
$(BUILD)/fuzz-nats_% $(BUILD)/fuzz-replay-nats_%: FUZZ_LINK = $(POSIX) -lnats
$(BUILD)/fuzz-cli_% $(BUILD)/fuzz-replay-cli_%: FUZZ_LINK = $(POSIX) -I. $(filter-out tools/opstate/main.c,$(TOOL_SRCS)) \
    -llmdb -lnats
FUZZ_DEPS = $(wildcard tests/fuzz/*.h) $(wildcard tests/impl*.c) $(TOOL_DEPS)

$(BUILD)/fuzz-replay-%: tests/fuzz/fuzz_%.c tests/fuzz/replay_main.c $(FUZZ_DEPS)
	@mkdir -p $(BUILD)
	$(CC) $(STD) $(SAN) $(WARN) $< tests/fuzz/replay_main.c $(FUZZ_LINK) -o $@

$(BUILD)/fuzz-%: tests/fuzz/fuzz_%.c $(FUZZ_DEPS)
	@mkdir -p $(BUILD)
	$(CLANG) $(STD) -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $(WARN) $< $(FUZZ_LINK) -o $@

# Starting seeds for the LMDB store and log targets, made from real ones.
$(BUILD)/lmdb_seeds: tests/fuzz/lmdb_seeds.c $(FUZZ_DEPS)
	@mkdir -p $(BUILD)
	$(CC) $(STD) $(SAN) $(POSIX) $(WARN) $< tests/impl_lmdb.c -llmdb -o $@

fuzz: $(addprefix $(BUILD)/fuzz-,$(FUZZ_NAMES))
	@for n in $(FUZZ_NAMES); do \
	    mkdir -p $(BUILD)/corpus/$$n; \
	    ./$(BUILD)/fuzz-$$n -max_total_time=$(FUZZ_TIME) -artifact_prefix=$(BUILD)/crash-$$n- \
	        $(BUILD)/corpus/$$n tests/fuzz/seeds/$$n || exit 1; \
	done

test: deps
	@bash scripts/test.sh

# Mutation testing (not part of make test: ~5 min on 2 cores): every guard
# listed in tests/mutants.txt is flipped in turn, in a copy of the tree, and
# its test must fail. Prints each mutant killed / SURVIVED and the score.
mutate:
	@bash scripts/mutate.sh

# The main job: publish 200,000 events into an embedded LMDB log, consume,
# kill -9 part-way, restart, check against a full replay, point-in-time.
demo: deps
	@bash scripts/demo.sh

# The same over a local nats-server (started on a free port, stopped by PID).
demo-nats: deps
	@bash scripts/demo_nats.sh

$(BUILD)/bench_core: bench/bench_core.c bench/bench_crc_small.c bench/bench_util.h tests/old_hash.h $(HEADERS)
	@mkdir -p $(BUILD)
	$(CC) -std=c99 -O2 -g $(WARN) -D_POSIX_C_SOURCE=200809L $(filter %.c,$^) -o $@

$(BUILD)/bench_lmdb: bench/bench_lmdb.c bench/bench_util.h $(HEADERS)
	@mkdir -p $(BUILD)
	$(CC) -std=c99 -O2 -g $(WARN) -D_POSIX_C_SOURCE=200809L -I. $< -llmdb -lsqlite3 -o $@

$(BUILD)/bench_nats: bench/bench_nats.c bench/bench_util.h $(HEADERS)
	@mkdir -p $(BUILD)
	$(CC) -std=c99 -O2 -g $(WARN) -D_POSIX_C_SOURCE=200809L -I. $< -lnats -o $@

$(BUILD)/bench_memcap: bench/bench_memcap.c bench/bench_util.h $(HEADERS)
	@mkdir -p $(BUILD)
	$(CC) -std=c99 -O2 -g $(WARN) -D_POSIX_C_SOURCE=200809L -I. $< -llmdb -o $@

# State larger than RAM under a real cgroup v1 memory cap (needs root, else
# SKIP; ~3 min, ~1.5 GB under /tmp): CAP_MIB=64 RATIO=4 VALUE_LEN=1000, the
# other knobs at the top of scripts/bench_memcap.sh. Part of the full
# `make bench`.
bench-memcap: deps $(BUILD)/bench_memcap
	@bash scripts/bench_memcap.sh

# Benchmarks print ratios against baselines measured in the same run, then
# bench/REPORT.md is written with its plots. QUICK=1: a short run (< 1 min).
bench: deps $(BUILD)/bench_core $(BUILD)/bench_lmdb $(BUILD)/bench_nats $(BUILD)/bench_memcap
	@BUILD=$(BUILD) QUICK=$(QUICK) BENCH_ARGS="$(BENCH_ARGS)" bash scripts/bench.sh

clean:
	rm -rf $(BUILD)
