# Entry points for people and CI: `make demo`, `make test`, `make bench`. Each installs what is missing first.
BUILD ?= build
JOBS ?= 2

.PHONY: deps build demo test test-asan test-tsan bench bench-smoke format clean package package-test

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
	PLUGIN_TEST_JOBS=1 ./tests/run-ctest.sh $(BUILD) -j $(JOBS) --output-on-failure --timeout 300

test-asan: deps
	cmake -S . -B build-asan -DBULKHEAD_SANITIZE=address >/dev/null
	cmake --build build-asan -j $(JOBS)
	./tests/run-ctest.sh build-asan --output-on-failure --timeout 600

test-tsan: deps
	cmake -S . -B build-tsan -DBULKHEAD_SANITIZE=thread >/dev/null
	cmake --build build-tsan -j $(JOBS)
	./tests/run-ctest.sh build-tsan --output-on-failure --timeout 600

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
