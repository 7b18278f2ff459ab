# The two set-up commands of the README. Each creates or reuses ./.venv and installs what it needs.
.PHONY: demo test

# The main job: prepare the default data set, train a small model on it, evaluate and sample.
demo:
	bash scripts/demo.sh

# The whole test suite, CPU only.
test:
	bash scripts/test.sh
