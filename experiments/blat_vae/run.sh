#!/usr/bin/env bash
# Reproduce the BLAT_ECOLX sequence-VAE experiments (see README.md in this folder).
#   bash experiments/blat_vae/run.sh [OUT]        (from the repository root, venv active)
set -euo pipefail
OUT=${1:-runs/blat_vae}
HERE=experiments/blat_vae
ALN=$(python -c "from protgen_jax.data import resolve; print(resolve('blat_ecolx', 'BLAT_ECOLX.a2m'))")
DMS=$(python -c "from protgen_jax.data import resolve; print(resolve('blat_ecolx', 'BLAT_ECOLX_Stiffler2015_dms.csv'))")

# 1. the lecture's plain VAE (overfits: the Spearman curve falls after ~1k steps)
protgen train vae --config $HERE/plain.json --data "$ALN" --out "$OUT/plain" --steps 4000 --set dms="$DMS"
# 2. the default config (DeepSequence-style Bayesian sparse decoder), three seeds for an ensemble
for seed in 0 1 2; do
  protgen train vae --data "$ALN" --out "$OUT/deepsequence_s$seed" --set seed=$seed --set dms="$DMS" --set eval_every=1000
done
# 3. scores: single model (M=500) and the ensemble, then both at the posterior mean (one pass each)
protgen score "$OUT/deepsequence_s0" --dms "$DMS" --column 2500 --out "$OUT/score_s0.json"
protgen score "$OUT"/deepsequence_s{0,1,2} --dms "$DMS" --column 2500 --samples 200 --out "$OUT/score_ensemble.json"
protgen score "$OUT/deepsequence_s0" --dms "$DMS" --column 2500 --estimator mean --out "$OUT/score_s0_mean.json"
protgen score "$OUT"/deepsequence_s{0,1,2} --dms "$DMS" --column 2500 --estimator mean --out "$OUT/score_ensemble_mean.json"
python $HERE/compare.py "$OUT/curves.png" plain="$OUT/plain" deepsequence="$OUT/deepsequence_s0"
