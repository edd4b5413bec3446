"""OpenAI-compatible HTTP engine (`openai`): engine, event-stream client, scoring."""
