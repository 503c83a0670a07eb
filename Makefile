# The two commands of the README. Both do their own set-up (scripts/setup.sh is idempotent).
.PHONY: demo test setup

demo:
	scripts/demo.sh

test:
	scripts/test.sh

setup:
	scripts/setup.sh
