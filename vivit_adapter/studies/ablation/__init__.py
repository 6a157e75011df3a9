r"""The paper's ablation, fairly tuned, on the 32-px miniature (recipes.synthetic;
plan.py says why not the 64-px one).

  python -m vivit_adapter.ablation --workdir=runs/ablation --out=docs/ablation \
      [--seeds=0,1,2] [--rows=baseline,I,III,V,...] [--data=DIR | --dataset_dir=DIR]

1. Data: the synthetic actions at 32x32 px (generated into <workdir>/data), or an
   existing DMVR dataset (--dataset_dir; a validation split is held out of train when
   it has none: `data`).
2. The image checkpoint (the ImageNet stand-in, `studies.image_pretrain`), made once.
3. The sweep, seed 0 (docs/design.md §2c): the baseline's grid, stage 1's grid (chosen
   by its own eval), then stage 2's grid from the chosen stage 1's feature cache; each
   chosen on the validation split (`plan.choose`); the baseline and stage 2 try as many
   configurations, and each grows its grid past an edge its choice sits on (`plan.extend`,
   at most plan.MAX_EXTENSIONS times).
4. The rows, on every seed, with the chosen schedules: baseline; I / III (frozen image
   spatial encoder, from that checkpoint's cache); V (stage 1 -> extraction -> stage 2
   from the cache); stage 1 at 2 / 4 / 8 frames; the adapter types; what limits V (stage 1
   trained 3x longer, with the attention or the mlp adapter, 4x longer or at 4 frames 6x
   longer with the mlp adapter; the baseline at twice its chosen steps; stage 2 on the
   baseline's own frozen spatial encoder, a ceiling); the adapter study (width, learning
   rate, what it reads). Seed 0's chosen sweep runs are reused.

Every run is an in-process `train_and_evaluate` in <workdir>/seed<k>/<run key>, every
feature cache in <workdir>/seed<k>/cache_<stage-1 run key or 'image'>, reused or made
by the rule of `studies.runs` (a run that finished with the same config is reused; an
unfinished one restarts from scratch, so that its time is whole). A row's time is its
whole route: its runs' training time plus its caches' extraction (wall and CPU).

Modules: `plan` (settings, grids, selection rule, rows, each run's config), `data`,
`run` (running them), `report` (the numbers: statistics, sweep, time to accuracy,
targets), `markdown` and `plots` (docs/ablation.{md,png}), `cost` (--plan_only: the runs
and their estimated training time before the study starts).
"""
