"""Offline transcription with Vosk: the model of each language, reading recordings, decoding."""
