# The two set-up commands the README promises:
#   make demo   runs the main job (a self-contained demo when no Kopano server is here)
#   make test   runs the whole test suite
# Both install what they need on a fresh Debian machine (as root), then build and run.

.PHONY: demo test deps lint test-lvm test-soak deb

deps:
	@scripts/install-deps

demo: deps
	cargo build --release
	@if [ -f /etc/kopano/server.cfg ]; then \
		./target/release/kcbackup backup; \
	else \
		echo "no Kopano server here (/etc/kopano/server.cfg missing): running kcbackup demo"; \
		./target/release/kcbackup demo; \
	fi

test:
	@scripts/install-deps --tests
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	scripts/run-tests

# The live-writer soak (tests/fault_live_writer.rs): 20 backups on btrfs
# and 20 without a snapshot while a writer changes the store, each set
# verified and drilled. Root for btrfs; about 5 to 10 minutes.
test-soak: deps
	cargo test --test fault_live_writer -- --ignored live_writer_soak --nocapture

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

# LVM snapshot tests (provider and real backups), in a small VM: this
# kernel has no device-mapper. Root; 5 to 8 minutes. See README.
test-lvm: deps
	tests/vm/run-lvm-tests

# The Debian package: target/debian/kcbackup_<version>_amd64.deb (cargo-deb;
# man pages and completions generated from the CLI definitions first).
deb: deps
	scripts/make-deb
