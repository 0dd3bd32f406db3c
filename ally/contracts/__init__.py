"""Every model that crosses Temporal, in one place and in words that fit any agent and any channel.

Start here to read the system: a chat's message becomes a turn (`TurnInput`, workflows/turn.py) of
its conversation (`ConversationState`, workflows/conversation.py); the turn asks an agent runtime
host to run it (`StartTurnInput` -> `TurnOutcome`), forwards each `AgentRequest` the agent waits on
to the chat or the policy, and sends the agent their `Decision`.

    agent.py      the agent's side: thread settings, requests, decisions, outcomes
    chat.py       the chat's side: chats, people, messages, replies, cards, emoji
    policy.py     the approval policy's configuration, question and verdict
    workflows.py  the workflows' own inputs, results, states and query views
    alerts.py     the owner's alerts: incidents, and what opens and resolves them
    routines.py   a routine's scheduled run, its outcome, and the memory digest's day
    workspace.py  workspace autosave: the git workspace before a turn, the commit after it
    files.py      files out: a workspace file sent to the chat, in chunks from the host

One model argument per workflow and activity, so fields can be added without breaking histories.
Payloads carry ids and the final text only, never transcripts. Nothing here imports an agent's
client package (ally/codex/): the runtime host translates to and from its wire format.
"""

from __future__ import annotations

from ally.contracts.agent import (
    AgentAccount as AgentAccount,
)
from ally.contracts.agent import (
    AgentRequest as AgentRequest,
)
from ally.contracts.agent import (
    AgentThread as AgentThread,
)
from ally.contracts.agent import (
    AnswerRequestInput as AnswerRequestInput,
)
from ally.contracts.agent import (
    ApprovalPolicy as ApprovalPolicy,
)
from ally.contracts.agent import (
    Decision as Decision,
)
from ally.contracts.agent import (
    DecisionWord as DecisionWord,
)
from ally.contracts.agent import (
    EndStatus as EndStatus,
)
from ally.contracts.agent import (
    ErrorKind as ErrorKind,
)
from ally.contracts.agent import (
    ForkInput as ForkInput,
)
from ally.contracts.agent import (
    GoalInput as GoalInput,
)
from ally.contracts.agent import (
    GoalProgress as GoalProgress,
)
from ally.contracts.agent import (
    GoalStatus as GoalStatus,
)
from ally.contracts.agent import (
    McpServer as McpServer,
)
from ally.contracts.agent import (
    Person as Person,
)
from ally.contracts.agent import (
    PlanItem as PlanItem,
)
from ally.contracts.agent import (
    ProgressStep as ProgressStep,
)
from ally.contracts.agent import (
    ReasoningEffort as ReasoningEffort,
)
from ally.contracts.agent import (
    RequestKind as RequestKind,
)
from ally.contracts.agent import (
    RuntimeLocation as RuntimeLocation,
)
from ally.contracts.agent import (
    SandboxMode as SandboxMode,
)
from ally.contracts.agent import (
    StartTurnInput as StartTurnInput,
)
from ally.contracts.agent import (
    SteerTurnInput as SteerTurnInput,
)
from ally.contracts.agent import (
    ThreadRef as ThreadRef,
)
from ally.contracts.agent import (
    ThreadRelease as ThreadRelease,
)
from ally.contracts.agent import (
    ThreadSettings as ThreadSettings,
)
from ally.contracts.agent import (
    ThreadsQuery as ThreadsQuery,
)
from ally.contracts.agent import (
    TurnActivity as TurnActivity,
)
from ally.contracts.agent import (
    TurnOutcome as TurnOutcome,
)
from ally.contracts.agent import (
    TurnProgress as TurnProgress,
)
from ally.contracts.alerts import (
    AlertsConfig as AlertsConfig,
)
from ally.contracts.alerts import (
    AlertsState as AlertsState,
)
from ally.contracts.alerts import (
    AlertsView as AlertsView,
)
from ally.contracts.alerts import (
    Incident as Incident,
)
from ally.contracts.alerts import (
    IncidentKind as IncidentKind,
)
from ally.contracts.alerts import (
    PartCrashed as PartCrashed,
)
from ally.contracts.alerts import (
    TurnFailed as TurnFailed,
)
from ally.contracts.chat import (
    ApprovalOutcome as ApprovalOutcome,
)
from ally.contracts.chat import (
    ApprovalPrompt as ApprovalPrompt,
)
from ally.contracts.chat import (
    ChatRef as ChatRef,
)
from ally.contracts.chat import (
    Choice as Choice,
)
from ally.contracts.chat import (
    FinalReply as FinalReply,
)
from ally.contracts.chat import (
    InboundMessage as InboundMessage,
)
from ally.contracts.chat import (
    ProgressCardRef as ProgressCardRef,
)
from ally.contracts.chat import (
    ProgressEnd as ProgressEnd,
)
from ally.contracts.chat import (
    ProgressState as ProgressState,
)
from ally.contracts.chat import (
    ProgressView as ProgressView,
)
from ally.contracts.chat import (
    ProgressWatch as ProgressWatch,
)
from ally.contracts.chat import (
    Reaction as Reaction,
)
from ally.contracts.chat import (
    ReactionRef as ReactionRef,
)
from ally.contracts.chat import (
    Reply as Reply,
)
from ally.contracts.chat import (
    ReplyUpdate as ReplyUpdate,
)
from ally.contracts.chat import (
    SentMessage as SentMessage,
)
from ally.contracts.files import (
    CHUNK_BYTES as CHUNK_BYTES,
)
from ally.contracts.files import (
    FILE_MAX_BYTES as FILE_MAX_BYTES,
)
from ally.contracts.files import (
    IMAGE_MAX_BYTES as IMAGE_MAX_BYTES,
)
from ally.contracts.files import (
    IMAGE_SUFFIXES as IMAGE_SUFFIXES,
)
from ally.contracts.files import (
    FileChunk as FileChunk,
)
from ally.contracts.files import (
    FileChunkQuery as FileChunkQuery,
)
from ally.contracts.files import (
    FileDelivery as FileDelivery,
)
from ally.contracts.files import (
    FileQuery as FileQuery,
)
from ally.contracts.files import (
    FileRequest as FileRequest,
)
from ally.contracts.files import (
    FileSent as FileSent,
)
from ally.contracts.files import (
    WorkspaceFile as WorkspaceFile,
)
from ally.contracts.policy import (
    MODES_BY_AUTONOMY as MODES_BY_AUTONOMY,
)
from ally.contracts.policy import (
    CommandGrant as CommandGrant,
)
from ally.contracts.policy import (
    Mode as Mode,
)
from ally.contracts.policy import (
    PolicyConfig as PolicyConfig,
)
from ally.contracts.policy import (
    PolicyQuestion as PolicyQuestion,
)
from ally.contracts.policy import (
    Rule as Rule,
)
from ally.contracts.policy import (
    SessionGrants as SessionGrants,
)
from ally.contracts.policy import (
    Verdict as Verdict,
)
from ally.contracts.policy import (
    capped as capped,
)
from ally.contracts.routines import (
    ContinuingThreadQuery as ContinuingThreadQuery,
)
from ally.contracts.routines import (
    DayConversation as DayConversation,
)
from ally.contracts.routines import (
    DayQuery as DayQuery,
)
from ally.contracts.routines import (
    DayRecord as DayRecord,
)
from ally.contracts.routines import (
    Exchange as Exchange,
)
from ally.contracts.routines import (
    RoutineKind as RoutineKind,
)
from ally.contracts.routines import (
    RoutineRun as RoutineRun,
)
from ally.contracts.routines import (
    RoutineRunResult as RoutineRunResult,
)
from ally.contracts.workflows import (
    BoundThreadsQuery as BoundThreadsQuery,
)
from ally.contracts.workflows import (
    ChatConfig as ChatConfig,
)
from ally.contracts.workflows import (
    ConversationState as ConversationState,
)
from ally.contracts.workflows import (
    ConversationView as ConversationView,
)
from ally.contracts.workflows import (
    DecisionRecord as DecisionRecord,
)
from ally.contracts.workflows import (
    GoalView as GoalView,
)
from ally.contracts.workflows import (
    HeldAttachment as HeldAttachment,
)
from ally.contracts.workflows import (
    Inbound as Inbound,
)
from ally.contracts.workflows import (
    LimitWait as LimitWait,
)
from ally.contracts.workflows import (
    LongWork as LongWork,
)
from ally.contracts.workflows import (
    PendingRequest as PendingRequest,
)
from ally.contracts.workflows import (
    ThreadBinding as ThreadBinding,
)
from ally.contracts.workflows import (
    ThreadsFound as ThreadsFound,
)
from ally.contracts.workflows import (
    ThreadsLookup as ThreadsLookup,
)
from ally.contracts.workflows import (
    TurnInput as TurnInput,
)
from ally.contracts.workflows import (
    TurnOrigin as TurnOrigin,
)
from ally.contracts.workflows import (
    TurnResult as TurnResult,
)
from ally.contracts.workflows import (
    TurnView as TurnView,
)
from ally.contracts.workspace import (
    AutosaveRequest as AutosaveRequest,
)
from ally.contracts.workspace import (
    AutosaveResult as AutosaveResult,
)
from ally.contracts.workspace import (
    DirtyPath as DirtyPath,
)
from ally.contracts.workspace import (
    SkipReason as SkipReason,
)
from ally.contracts.workspace import (
    SnapshotRequest as SnapshotRequest,
)
from ally.contracts.workspace import (
    WorkspaceSnapshot as WorkspaceSnapshot,
)
