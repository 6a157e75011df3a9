"""Studies built from many training runs: the demo, the ablation, image pretraining.

Each study runs `train_lib.trainer.train_and_evaluate` in process, one workdir per run;
`runs` holds the one rule for reusing, or training, a run, and `experiment_configs`
loads the experiment files they start from. The command-line entry points stay
`python -m vivit_adapter.{demo,ablation,image_pretrain}`.
"""
