.PHONY: run test setup lint bench

run:
	./scripts/run.sh

test:
	./scripts/test.sh

setup:
	./scripts/setup.sh

lint:
	.venv/bin/ruff check engine dashboard tests bench
	.venv/bin/ruff format engine dashboard tests bench

bench:
	.venv/bin/python bench/run_latency
	.venv/bin/python bench/cli_startup
