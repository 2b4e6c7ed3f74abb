"""Pure conversation policies: the turn and the conversation state in, one decision out.

Policies decide, the engine acts. Each policy (`policies.base.Policy`) separates "does it apply?"
from "what does it decide?", reads a `TurnContext` and a `ConversationState`
(`policies.state`) and returns a `PolicyDecision`; none sends, stores or searches anything.
`policies.pipeline` runs them in the one documented order; `policies.config` loads and validates
their settings (`policies/default.yaml`, overridden by ``SUPPORTBOT_POLICIES``);
`policies.decision` is the knowledge base's answer/clarify/fall-back decision the pipeline uses.
"""
