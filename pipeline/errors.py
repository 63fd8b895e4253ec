"""Named errors that a stage turns into one line and a non-zero exit."""


class PipelineError(Exception):
    """Base of every error the stages report as one line."""


class ConfigError(PipelineError):
    """params.yaml is malformed: unknown key, wrong type, value out of range, unknown variant."""


class DataError(PipelineError):
    """A dataset is missing, has the wrong shape or labels, or a split cannot be drawn."""


class CheckpointError(PipelineError):
    """A checkpoint is corrupt, truncated, unsafe or of another architecture."""


class DivergenceError(PipelineError):
    """Training produced a non-finite loss."""
