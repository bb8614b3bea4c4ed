"""twibridge: answer Twilio phone calls with an AI voice agent, on Trio."""

__version__ = "0.1.0"
