"""Demo helpers shipped with capguard (e.g. the scripted fake model server in ``fake_openai``)."""
