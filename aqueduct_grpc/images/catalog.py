"""Model resolution: public names, aliases and per-token access."""

from __future__ import annotations

import grpc

from aqueduct_grpc.auth.tokens import Token
from aqueduct_grpc.config import ConfigError, ModelConfig
from aqueduct_grpc.errors import GatewayError, quoted
from aqueduct_grpc.images.validation import MAX_MODEL_CHARS, check_model_name

__all__ = ["ModelCatalog"]


class ModelCatalog:
    """The configured image models, looked up by name or alias."""

    def __init__(self, models: tuple[ModelConfig, ...], *, default_model: str) -> None:
        """Creates the ModelCatalog.

        Args:
            models: the configured models.
            default_model: the name or alias used when a request names none.
        """
        for model in models:
            for name in (model.name, *model.aliases):
                if len(name) > MAX_MODEL_CHARS:
                    # No request could name it (see `check_model_name`).
                    raise ConfigError(
                        f"model name {quoted(name)} is longer than {MAX_MODEL_CHARS} characters"
                    )
        self._models = models
        self._by_name = {n: m for m in models for n in (m.name, *m.aliases)}
        self._default = self._by_name[default_model]

    def resolve(self, name: str | None, token: Token) -> ModelConfig:
        """The model `name` refers to, if `token` may use it.

        Raises NOT_FOUND for an unknown model and for one the token may not
        use alike, so a caller cannot probe which models exist, and
        INVALID_ARGUMENT for a name longer than any model's.
        """
        if name is not None:
            check_model_name(name)
        model = self._default if name is None else self._by_name.get(name)
        if model is None or not self.allows(token, model):
            shown = name if name is not None else model.name if model else ""
            raise GatewayError(
                grpc.StatusCode.NOT_FOUND,
                f"The model {quoted(shown)} does not exist or you do not have access to it.",
                reason="MODEL_NOT_FOUND",
                param="model",
            )
        return model

    def visible(self, token: Token) -> list[ModelConfig]:
        """The models `token` may use, in configuration order."""
        return [m for m in self._models if self.allows(token, m)]

    def allows(self, token: Token, model: ModelConfig) -> bool:
        """Whether the token's allowed-models list (names or aliases) covers `model`."""
        if token.allowed_models is None:
            return True
        return any(self._by_name.get(name) is model for name in token.allowed_models)
