# Hardening targets, included from the Makefile (`include mk/fuzz.mk`).
#   make fuzz        libFuzzer + ASan + UBSan over the C parsing surfaces (tools/fuzz.sh),
#                    FUZZ_SECONDS per target (default 20), FUZZ_TARGETS to narrow
#   make sanitize    the C-touching specs over an ASan + UBSan core (tools/sanitize.sh)
#   make clean-fuzz  remove build-fuzz/, build-fuzz-gcc/, build-asan/
FUZZ_SECONDS ?= 20

.PHONY: fuzz sanitize clean-fuzz

fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash tools/fuzz.sh

sanitize:
	bash tools/sanitize.sh

clean-fuzz:
	rm -rf build-fuzz build-fuzz-gcc build-asan
