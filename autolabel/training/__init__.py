"""Training: `loop.fit` (the one training loop) with its helpers as small objects
(`checkpoints.CheckpointSaver`, `ema.WeightAverage`), batch augmentation (`augment`),
`autolabel train` as a library call (`job.train_model`), `autolabel finetune` as named stages
(`finetune`), and the figures of a run (`figures`). Everything here but `figures` imports torch.
"""
