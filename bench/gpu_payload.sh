#!/usr/bin/env bash
# Pack what bench/gpu.sh needs on a GPU machine that has PyTorch with CUDA but no network and none of the project's
# other packages, as parts small enough to carry one at a time (not a test).
#
# Packs: DALI (nvidia-dali-cuda120 and the nvImageCodec / nvJPEG / nvCOMP wheels it loads), webdataset and
# pydantic with their pure-Python needs, installed for CPython 3.12 x86-64 into one folder and compressed with xz
# (~290 MB instead of ~500 MB of wheels); the reference data the checks read (3ddfa/, 3ddfa_v2/,
# aflw2000_3d_crop/); and the demo shard set. Then `split` cuts the bundle into parts of PART_SIZE (default 62M).
#     bench/gpu_payload.sh /tmp/gpu-payload          # -> /tmp/gpu-payload/parts/part00 ...
# On the GPU machine, with the parts in one folder and this repository as the working directory:
#     cat parts/part* > payload.tar && mkdir -p x site && tar -xf payload.tar -C x && tar -xJf x/site.tar.xz -C site
#     PYTHONPATH=$PWD/site:$PWD R3FA_DATA=$PWD/x/data bench/gpu.sh x/shards /tmp/gpu-out
# The data is research-only: the payload is for that machine, never for the repository.
set -euo pipefail
out=${1:?usage: bench/gpu_payload.sh OUT_DIR}
cd "$(dirname "$0")/.."
data=${R3FA_DATA:-../shared/data}
mkdir -p "$out"
out=$(cd "$out" && pwd)

wheels=(nvidia-dali-cuda120==2.4.0 nvidia-nvimgcodec-cu12==0.9.0.20 nvidia-nvjpeg-cu12==12.4.0.76
        nvidia-libnvcomp-cu12==5.3.0.16 astunparse gast libcst makefun nvtx optree
        webdataset==1.0.2 braceexpand pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection)
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$tag")
done
echo "== wheels for CPython 3.12 -> $out/site"
rm -rf "$out/site" "$out/bundle" "$out/parts"
python3 -m pip install -q --disable-pip-version-check --no-deps --no-compile --target "$out/site" \
    --python-version 3.12 --implementation cp --only-binary=:all: "${platforms[@]}" "${wheels[@]}" 2>&1 |
    { grep -v "is ignored" || true; }  # pipefail: pip's own exit status decides
rm -rf "$out/site/bin" "$out/site/nvidia/dali/include"
find "$out/site/nvidia/dali" -maxdepth 1 -name "*.cpython-3*.so" ! -name "*cpython-312-*" -delete  # other Pythons
echo "== xz (a few minutes on 2 cores)"
mkdir -p "$out/bundle/data/3ddfa" "$out/bundle/data/3ddfa_v2"
tar -C "$out/site" -cf - . | xz -T0 -6 >"$out/bundle/site.tar.xz"

echo "== reference data from $data and the demo shard set"
cp -r "$data/3ddfa/train.configs" "$data/3ddfa/test.configs" "$data/3ddfa/c++" "$out/bundle/data/3ddfa/"
cp -r "$data/3ddfa_v2/configs" "$data/3ddfa_v2/weights" "$out/bundle/data/3ddfa_v2/"
cp -r "$data/aflw2000_3d_crop" "$out/bundle/data/"
R3FA_DATA=$data .venv/bin/r3fa shards build configs/mix/demo.yaml --out "$out/bundle/shards" --workers 0 -f json \
    >/dev/null

echo "== parts"
tar -C "$out/bundle" -cf "$out/payload.tar" site.tar.xz data shards
mkdir -p "$out/parts"
split -b "${PART_SIZE:-62M}" -d "$out/payload.tar" "$out/parts/part"
rm "$out/payload.tar"
ls -l "$out/parts"
