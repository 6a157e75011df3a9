"""The start-up checks under the name programs and users first knew them by: they live in
vivit_adapter.train_lib.startup, beside the trainer that runs them when no entry did."""

from vivit_adapter.train_lib.startup import check_run_inputs, check_shards_per_host  # pylint: disable=unused-import
