"""``chordguard mcp``: chord health for on-call assistants, over the Model Context Protocol
(the ``chordguard[mcp]`` extra installs the SDK)."""
