"""Valid input the fuzzers mutate, and the tokens they splice in, per protocol."""

from __future__ import annotations

import base64

_PLAIN = base64.b64encode(b"\0user@example.org\0secret").decode()

SMTP_LINES = [
    line.encode()
    for line in (
        "EHLO client.example",
        "HELO [192.0.2.1]",
        "EHLO [IPv6:2001:db8::1]",
        "MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=ab+2Bc AUTH=<>",
        "MAIL FROM:<>",
        "MAIL FROM:<@relay.example:a@example.org>",
        'mail from: <"quoted local"@example.org>',
        "RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40x@example.org",
        "RCPT TO:<Postmaster>",
        "RCPT TO:<b@[192.0.2.7]>",
        "RCPT TO:<ü@exämple.org>",
        "DATA",
        "BDAT 10 LAST",
        "BDAT 0",
        "RSET",
        "NOOP x",
        "VRFY someone",
        "EXPN list",
        "HELP",
        "QUIT",
        "STARTTLS",
        f"AUTH PLAIN {_PLAIN}",
        "AUTH LOGIN",
        "AUTH PLAIN =",
        "GET / HTTP/1.0",
        "Host: example.org",
    )
]
SMTP_TOKENS = [
    b"FROM:",
    b"TO:",
    b"<",
    b">",
    b"@",
    b"SIZE=",
    b"BODY=",
    b"NOTIFY=",
    b"ORCPT=",
    b"ENVID=",
    b"RET=",
    b"AUTH=",
    b"+2B",
    b"+",
    b"LAST",
    b"[IPv6:",
    b"::",
    b"example.org",
    b"Postmaster",
    b"PLAIN",
    b"LOGIN",
]

IMAP_LINES = [
    line.encode()
    for line in (
        "a CAPABILITY",
        "a NOOP",
        'a LOGIN user "pass word"',
        "a LOGIN {4}",
        "a LOGIN {4+}",
        f"a AUTHENTICATE PLAIN {_PLAIN}",
        "a AUTHENTICATE LOGIN",
        "a AUTHENTICATE PLAIN =",
        "a STARTTLS",
        "a SELECT INBOX (CONDSTORE)",
        'a EXAMINE "Sent"',
        'a CREATE "a/b&AOk-"',
        "a DELETE x",
        "a RENAME a b",
        "a SUBSCRIBE INBOX",
        'a LIST "" "*"',
        'a LIST (SUBSCRIBED) "" (INBOX "%") RETURN (CHILDREN STATUS (MESSAGES))',
        'a LSUB "" %',
        "a STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)",
        'a APPEND INBOX (\\Seen) " 1-Jan-2024 10:00:00 +0000" {12}',
        "a APPEND INBOX {3+}",
        "a FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)",
        "a UID FETCH 1,3:5,* (BODY.PEEK[HEADER.FIELDS (Subject From)]<0.100> BODY[1.2.MIME] BINARY[1])",
        "a FETCH 2 (BODY[TEXT] RFC822.HEADER) (CHANGEDSINCE 5)",
        "a FETCH 1 FAST",
        "a FETCH * ALL",
        "a STORE 1:2 +FLAGS.SILENT (\\Deleted $Junk)",
        "a UID STORE 5 (UNCHANGEDSINCE 3) FLAGS ()",
        "a SEARCH CHARSET UTF-8 OR (FROM alice SUBJECT {3}) NOT SEEN",
        "a UID SEARCH RETURN (MIN MAX COUNT ALL) 1:* LARGER 100 SINCE 1-Jan-2020 HEADER X-Spam yes MODSEQ 7",
        'a SEARCH NOT (OR DELETED DRAFT) UID 1:5,7 BODY "hello" TEXT x BEFORE 2-Feb-2021 SENTON 3-Mar-2022',
        "a COPY 1:3 Archive",
        'a UID MOVE 4 "Trash"',
        "a EXPUNGE",
        "a UID EXPUNGE 3:4",
        "a CLOSE",
        "a UNSELECT",
        "a CHECK",
        "a IDLE",
        "a NAMESPACE",
        "a ENABLE CONDSTORE",
        'a ID ("name" "fuzz" "version" NIL)',
        "a ID NIL",
        "a LOGOUT",
    )
]
IMAP_TOKENS = [
    b"UID ",
    b"FETCH",
    b"SEARCH",
    b"STORE",
    b"BODY[",
    b"BODY.PEEK[",
    b"HEADER.FIELDS.NOT",
    b"<0.10>",
    b"1:*",
    b"*",
    b"4294967295",
    b"{5}\r\nhello",
    b"{0}\r\n",
    b"{3+}\r\nabc",
    b"NIL",
    b"NOT ",
    b"OR ",
    b"(",
    b")",
    b"\\Seen",
    b"$",
    b"&AOk-",
    b"&-",
    b"&Jjo",
    b"INBOX",
    b"CHARSET",
    b"MODSEQ",
    b"RETURN",
]

POP3_LINES = [
    line.encode()
    for line in (
        "CAPA",
        "USER user@example.org",
        "PASS pass word",
        f"AUTH PLAIN {_PLAIN}",
        "AUTH PLAIN",
        "AUTH PLAIN =",
        "AUTH",
        "STLS",
        "STAT",
        "LIST",
        "LIST 1",
        "UIDL",
        "UIDL 2",
        "RETR 1",
        "TOP 1 0",
        "TOP 1 10",
        "DELE 1",
        "NOOP",
        "RSET",
        "QUIT",
    )
]
POP3_TOKENS = [b"USER", b"PASS", b"AUTH", b"PLAIN", b"RETR", b"TOP", b"LIST", b"1", b"0", b"4294967296", b"="]

MESSAGES = [
    b'From: Alice <alice@example.org>\r\nTo: bob@example.org, "Carol, C." <carol@example.org>\r\n'
    b"Cc: group: d@example.org, e@example.org;\r\nSubject: =?utf-8?q?caf=C3=A9?= hello\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\nIn-Reply-To: <0@example.org>\r\n"
    b"\r\nHello.\r\n",
    b'From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b"preamble\r\n--outer\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    b"\r\ncaf=C3=A9\r\n--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\n"
    b"Content-Type: text/html\r\n\r\n<p>x</p>\r\n--inner--\r\n--outer\r\nContent-Type: message/rfc822\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''na%C3%AFve.eml\r\n\r\nSubject: inner\r\n\r\nbody\r\n"
    b'--outer\r\nContent-Type: application/octet-stream; name="a.bin"\r\nContent-Transfer-Encoding: base64\r\n'
    b"Content-Language: en, fr\r\nContent-Location: http://example.org/a\r\n\r\nAAEC\r\n--outer--\r\nepilogue\r\n",
    b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\n1\n--d\nContent-Type: text/plain\n\n2\n--d--\n",
]
MIME_TOKENS = [
    b"\r\n",
    b"\n\n",
    b"--outer",
    b"--inner--",
    b"--d\n",
    b"Content-Type: ",
    b"multipart/",
    b"message/rfc822",
    b"; boundary=",
    b"; charset=",
    b"=?utf-8?b?",
    b"?=",
    b"=?",
    b"<",
    b">",
    b"@",
    b",",
    b";",
    b":",
    b'"',
    b"(",
    b")",
    b" folded\r\n",
    b"*0*=",
    b"''",
    b"%C3",
]
