"""DevOps Agent: cloud chores through chat, paid for with credits."""
