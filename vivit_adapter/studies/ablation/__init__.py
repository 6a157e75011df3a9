r"""The paper's ablation table, in miniature, on the synthetic action dataset.

  python -m vivit_adapter.ablation --workdir=runs/ablation --out=docs/ablation \
      [--seeds=0,1,2] [--rows=baseline,I,III,V,...] [--data=DIR] [--quick]

Rows, all at the stage-2 frame count of experiments/synthetic_stage2.py:
* baseline: end to end from the image checkpoint (experiments/synthetic_baseline.py);
* I: frozen image-checkpoint spatial encoder, no adapter, random temporal init;
* III: as I, with the attention adapter;
* V: the two-stage recipe, stage 1 end to end on few frames, then stage 2 (frozen
  spatial + adapter + temporal init from stage 1).
Sub-tables: stage 1 at 2 / 4 / 8 frames (then the same stage 2), and the stage-2
adapter type (attention / mlp / none). The image checkpoint, standing in for ImageNet,
comes from `studies.image_pretrain` (made once, shared by every row and seed).
Schedules: every end-to-end run (the baseline and each stage 1) trains for the steps of
experiments/synthetic_stage1.py, every frozen run (I, III, each stage 2) for those of
experiments/synthetic_stage2.py. The data is the demo's (studies.demo.FULL).

Every run is an in-process `train_and_evaluate` in <workdir>/seed<k>/<run>, reused or
trained by the rule of `studies.runs`: a run that finished with the same config is
reused, so an interrupted ablation continues where it stopped (an unfinished run
restarts from scratch, so that its time is whole). A row's wall time is the sum of its
runs' train_time_s (V: stage 1 + stage 2). Rows run seed by seed, main table first,
so a partial ablation is still a table.

Modules: `plan` (which runs and rows, and each run's config), `run` (running them),
`report` (the numbers: statistics, targets, time to accuracy), `markdown` and `plots`
(docs/ablation.{md,png}).
"""
