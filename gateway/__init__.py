"""The gateway: an asyncio container that speaks SMTP, IMAP and POP3 and hands each
piece of work to the mail functions."""
