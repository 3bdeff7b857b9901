# SPDX-License-Identifier: Apache-2.0
# Convenience front end over CMake. `make` builds into build/, `make test` runs the suite,
# `make asan` runs it again under ASan+UBSan in build-asan/, `make check` does both.
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all build test asan check fuzz format clean deps demo demo-down

all: build

build/CMakeCache.txt:
	cmake -S . -B build $(CMAKE_FLAGS)

build: build/CMakeCache.txt
	cmake --build build -j$(JOBS)

test: build
	cd build && ctest --output-on-failure -j$(JOBS)

build-asan/CMakeCache.txt:
	cmake -S . -B build-asan -DDS_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS)

asan: build-asan/CMakeCache.txt
	cmake --build build-asan -j$(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j$(JOBS)

check: test asan

build-fuzz/CMakeCache.txt:
	CC=clang cmake -S . -B build-fuzz -DDS_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS)

fuzz: build-fuzz/CMakeCache.txt
	cmake --build build-fuzz -j$(JOBS)

format:
	find include lib daemons cli bench sdk tests -name '*.[ch]' | xargs clang-format -i

deps:
	scripts/install-deps.sh

# The main job: simulated TEE + attested CVM + external verification (scripts/demo.sh).
demo:
	scripts/demo.sh

demo-down:
	scripts/demo.sh down

clean:
	rm -rf build build-asan build-fuzz
