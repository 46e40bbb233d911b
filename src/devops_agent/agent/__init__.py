"""The DevOps agent: the loop, its LLM backends (Claude, offline) and its cloud tools."""
