#!/usr/bin/env bash
# Install detectron2 0.6 into the active Python without its C++/CUDA extension.
#
# There is no official detectron2 wheel on the package registry. The `pb1-detectron2==0.6` sdist
# is detectron2 0.6 without its C++ sources, so we build it with `ext_modules=[]` and without its
# `black==21.4b2` pin. zsi_d2/compat.py supplies what the missing `detectron2._C` would have.
# Users with a GPU and internet should install upstream detectron2 instead (see README).
set -euo pipefail
PY=${PYTHON:-python}

# A detectron2 without its compiled ops gets a `detectron2/_C.py` whose import error says what to do:
# a script that imports detectron2 before zsi_d2 (which installs pure-PyTorch stand-ins) then reads
# "import zsi_d2 first" instead of "cannot import name '_C'". Upstream builds (a compiled _C) are left alone.
explain_missing_ops() {
  "$PY" - <<'PYEOF'
import importlib.util, os
import detectron2
spec = importlib.util.find_spec("detectron2._C")
path = os.path.join(os.path.dirname(detectron2.__file__), "_C.py")
if spec is None or spec.origin == path:
    with open(path, "w") as f:
        f.write('"""Written by zsi_d2\'s tools/install_detectron2.sh: this detectron2 has no compiled ops."""\n'
                'raise ImportError("this detectron2 was built without its C++ ops (zsi_d2\'s tools/install_detectron2.sh): '
                'import zsi_d2 before detectron2 (put `import zsi_d2` first in your script); it supplies '
                'pure-PyTorch stand-ins")\n')
PYEOF
}

if "$PY" -c "import detectron2" 2>/dev/null; then
  echo "detectron2 already installed: $("$PY" -c 'import detectron2; print(detectron2.__file__)')"
  explain_missing_ops
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation pb1-detectron2==0.6 -d "$work" -q
tar -xzf "$work"/pb1*detectron2-0.6.tar.gz -C "$work"
src=$(find "$work" -maxdepth 1 -mindepth 1 -type d | head -n 1)
"$PY" - "$src/setup.py" <<'PYEOF'
import re, sys
path = sys.argv[1]
text = open(path).read()
text, n_ext = re.subn(r"ext_modules=get_extensions\(\)", "ext_modules=[]", text)
text, n_black = re.subn(r"\s*\"black==21\.4b2\",", "", text)
if n_ext != 1:
    sys.exit(f"install_detectron2: could not disable the C++ extension in {path}")
open(path, "w").write(text)
PYEOF
"$PY" -m pip install --no-build-isolation --no-deps -q "$src"
explain_missing_ops
"$PY" -c "import detectron2; print('detectron2', detectron2.__version__, 'installed (no _C extension)')"
