# Entry points for people and CI: `make demo`, `make test`, `make bench`. Each installs what is missing first.
BUILD ?= build
JOBS ?= 2

.PHONY: deps build demo test test-debian test-asan test-tsan check-thread-safety bench bench-smoke format clean package package-test

deps:
	./scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	./scripts/demo.sh $(BUILD)

# Tests run $(JOBS) at a time (each has its own directory and service), and the plugin tests one
# case at a time each (not two: the parallel tests keep the machine busy enough); tests/run-ctest.sh
# then prints the total time and the five slowest cases.
test: build
	PLUGIN_TEST_JOBS=1 ./tests/run-ctest.sh $(BUILD) -j $(JOBS) -LE debian --output-on-failure --timeout 300

# A real Debian (tests/integration/debian.sh): a root filesystem built by mmdebstrap (cached in
# /var/cache/bulkhead-test, or BULKHEAD_TEST_CACHE), registered and used by root and by a user with
# a subordinate range, and `bulkhead install` for real. Needs the apt sources (skipped with a
# message without them and without a cached tar); about 80 s warm, 100 s cold, so not in `test`.
test-debian: build
	./tests/run-ctest.sh $(BUILD) -L debian --output-on-failure --timeout 600

test-asan: deps
	cmake -S . -B build-asan -DBULKHEAD_SANITIZE=address >/dev/null
	cmake --build build-asan -j $(JOBS)
	./tests/run-ctest.sh build-asan -LE debian --output-on-failure --timeout 600

test-tsan: deps
	cmake -S . -B build-tsan -DBULKHEAD_SANITIZE=thread >/dev/null
	cmake --build build-tsan -j $(JOBS)
	./tests/run-ctest.sh build-tsan -LE debian --output-on-failure --timeout 600

# Clang's thread-safety analysis (src/base/mutex.h) over every source, as errors; and no lock
# that it cannot see. About 35 s on 2 cores.
check-thread-safety: build
	./scripts/check-thread-safety.sh $(BUILD)

# Benchmarks (bench/README.md): a RelWithDebInfo build, then every benchmark; writes
# bench/results.json and bench/results.md. bench-smoke runs each one briefly and checks only that
# its results are sane (results in $(BUILD)/bench-smoke), for CI.
bench: build
	./bench/run.sh $(BUILD)

bench-smoke: build
	./bench/run.sh $(BUILD) --smoke

# Debian packages (docs/packaging.md): bulkhead and bulkhead-dev in build-package/packages/, checked
# by lintian. package-test installs them into a clean Debian 12 root (mmdebstrap; slow, needs the
# apt sources, skipped with a message without them) and runs the service there. Neither is in `test`.
package: deps
	./scripts/install-deps.sh package
	./scripts/make-package.sh build-package

package-test: package
	./scripts/package-test.sh build-package || [ $$? -eq 77 ]   # 77: skipped, the message says why

format:
	git ls-files '*.cpp' '*.h' '*.c' | xargs clang-format -i

clean:
	rm -rf $(BUILD) build-asan build-tsan build-package
