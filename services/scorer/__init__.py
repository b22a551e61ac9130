"""The scorer: runs the protocol one step per message, keeping no state between messages."""
