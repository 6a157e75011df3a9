"""The training loop (being written): `train_and_evaluate(config, workdir)`."""


def train_and_evaluate(config, workdir):
  """Trains and evaluates `config` in `workdir`; returns the summary dict."""
  raise NotImplementedError('The trainer is being written.')
