from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Limits(_message.Message):
    __slots__ = ("requests_per_minute", "images_per_minute", "images_per_day")
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    requests_per_minute: int
    images_per_minute: int
    images_per_day: int
    def __init__(self, requests_per_minute: _Optional[int] = ..., images_per_minute: _Optional[int] = ..., images_per_day: _Optional[int] = ...) -> None: ...

class Budgets(_message.Message):
    __slots__ = ("per_day_usd", "per_month_usd")
    PER_DAY_USD_FIELD_NUMBER: _ClassVar[int]
    PER_MONTH_USD_FIELD_NUMBER: _ClassVar[int]
    per_day_usd: float
    per_month_usd: float
    def __init__(self, per_day_usd: _Optional[float] = ..., per_month_usd: _Optional[float] = ...) -> None: ...

class Token(_message.Message):
    __slots__ = ("id", "name", "state", "created_at", "expires_at", "revoked_at", "models", "team_id", "admin", "limits", "budgets")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    state: str
    created_at: int
    expires_at: int
    revoked_at: int
    models: _containers.RepeatedScalarFieldContainer[str]
    team_id: str
    admin: bool
    limits: Limits
    budgets: Budgets
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., created_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., revoked_at: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., team_id: _Optional[str] = ..., admin: _Optional[bool] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., budgets: _Optional[_Union[Budgets, _Mapping]] = ...) -> None: ...

class Team(_message.Message):
    __slots__ = ("id", "name", "created_at", "limits", "budgets")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    created_at: int
    limits: Limits
    budgets: Budgets
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., created_at: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., budgets: _Optional[_Union[Budgets, _Mapping]] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("name", "expires_in_seconds", "models", "team", "admin", "limits", "budgets")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    expires_in_seconds: int
    models: _containers.RepeatedScalarFieldContainer[str]
    team: str
    admin: bool
    limits: Limits
    budgets: Budgets
    def __init__(self, name: _Optional[str] = ..., expires_in_seconds: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., team: _Optional[str] = ..., admin: _Optional[bool] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., budgets: _Optional[_Union[Budgets, _Mapping]] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token", "secret")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    token: Token
    secret: str
    def __init__(self, token: _Optional[_Union[Token, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[Token]
    def __init__(self, tokens: _Optional[_Iterable[_Union[Token, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: Token
    def __init__(self, token: _Optional[_Union[Token, _Mapping]] = ...) -> None: ...

class SetTokenPolicyRequest(_message.Message):
    __slots__ = ("token", "team", "admin", "limits", "budgets")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    token: str
    team: str
    admin: bool
    limits: Limits
    budgets: Budgets
    def __init__(self, token: _Optional[str] = ..., team: _Optional[str] = ..., admin: _Optional[bool] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., budgets: _Optional[_Union[Budgets, _Mapping]] = ...) -> None: ...

class SetTokenPolicyResponse(_message.Message):
    __slots__ = ("token", "removed")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    token: Token
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, token: _Optional[_Union[Token, _Mapping]] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateTokenPolicyRequest(_message.Message):
    __slots__ = ("token", "patch")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PATCH_FIELD_NUMBER: _ClassVar[int]
    token: str
    patch: _struct_pb2.Struct
    def __init__(self, token: _Optional[str] = ..., patch: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpdateTokenPolicyResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: Token
    def __init__(self, token: _Optional[_Union[Token, _Mapping]] = ...) -> None: ...

class CreateTeamRequest(_message.Message):
    __slots__ = ("name", "limits", "budgets")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    limits: Limits
    budgets: Budgets
    def __init__(self, name: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., budgets: _Optional[_Union[Budgets, _Mapping]] = ...) -> None: ...

class CreateTeamResponse(_message.Message):
    __slots__ = ("team",)
    TEAM_FIELD_NUMBER: _ClassVar[int]
    team: Team
    def __init__(self, team: _Optional[_Union[Team, _Mapping]] = ...) -> None: ...

class ListTeamsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTeamsResponse(_message.Message):
    __slots__ = ("teams",)
    TEAMS_FIELD_NUMBER: _ClassVar[int]
    teams: _containers.RepeatedCompositeFieldContainer[Team]
    def __init__(self, teams: _Optional[_Iterable[_Union[Team, _Mapping]]] = ...) -> None: ...

class SetTeamPolicyRequest(_message.Message):
    __slots__ = ("team", "limits", "budgets")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    team: str
    limits: Limits
    budgets: Budgets
    def __init__(self, team: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., budgets: _Optional[_Union[Budgets, _Mapping]] = ...) -> None: ...

class SetTeamPolicyResponse(_message.Message):
    __slots__ = ("team", "removed")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    team: Team
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, team: _Optional[_Union[Team, _Mapping]] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateTeamPolicyRequest(_message.Message):
    __slots__ = ("team", "patch")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    PATCH_FIELD_NUMBER: _ClassVar[int]
    team: str
    patch: _struct_pb2.Struct
    def __init__(self, team: _Optional[str] = ..., patch: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpdateTeamPolicyResponse(_message.Message):
    __slots__ = ("team",)
    TEAM_FIELD_NUMBER: _ClassVar[int]
    team: Team
    def __init__(self, team: _Optional[_Union[Team, _Mapping]] = ...) -> None: ...

class QueryUsageRequest(_message.Message):
    __slots__ = ("since", "until", "by")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    since: str
    until: str
    by: str
    def __init__(self, since: _Optional[str] = ..., until: _Optional[str] = ..., by: _Optional[str] = ...) -> None: ...

class QueryUsageResponse(_message.Message):
    __slots__ = ("since", "until", "by", "groups")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    since: int
    until: int
    by: str
    groups: _containers.RepeatedCompositeFieldContainer[UsageGroup]
    def __init__(self, since: _Optional[int] = ..., until: _Optional[int] = ..., by: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[UsageGroup, _Mapping]]] = ...) -> None: ...

class UsageGroup(_message.Message):
    __slots__ = ("key", "name", "requests", "images", "failures", "p50_latency_ms", "p95_latency_ms", "cost_usd", "unpriced_requests")
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    P50_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    P95_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    key: str
    name: str
    requests: int
    images: int
    failures: int
    p50_latency_ms: float
    p95_latency_ms: float
    cost_usd: float
    unpriced_requests: int
    def __init__(self, key: _Optional[str] = ..., name: _Optional[str] = ..., requests: _Optional[int] = ..., images: _Optional[int] = ..., failures: _Optional[int] = ..., p50_latency_ms: _Optional[float] = ..., p95_latency_ms: _Optional[float] = ..., cost_usd: _Optional[float] = ..., unpriced_requests: _Optional[int] = ...) -> None: ...
