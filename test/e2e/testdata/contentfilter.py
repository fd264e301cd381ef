#!/usr/bin/env python3
"""An after-queue content filter in the style of amavisd-new, for the tests.

    contentfilter.py LISTEN_PORT RETURN_PORT NAME

Postfix hands mail to it over SMTP (content_filter = scan:[127.0.0.1]:LISTEN_PORT,
with smtp_send_xforward_command = yes); it adds "X-Content-Filter: NAME" at
the top and re-injects the message over SMTP into 127.0.0.1:RETURN_PORT,
passing the original client on with XFORWARD, as amavis does. Postfix gets
the return port's reply, so nothing is accepted that was not re-injected.
It prints "ready PORT" once listening and logs one line per message on
stderr.
"""

import smtplib
import socketserver
import sys


class Handler(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        self.reply("220 contentfilter ESMTP")
        xforward, sender, rcpts = [], None, []
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250-contentfilter")
                self.reply("250-8BITMIME")
                self.reply("250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE")
            elif verb == "XFORWARD":
                xforward.append(line.split(" ", 1)[1])
                self.reply("250 2.0.0 Ok")
            elif verb == "MAIL":
                sender, rcpts = line[10:].split(">")[0].lstrip("<"), []
                self.reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                rcpts.append(line[8:].split(">")[0].lstrip("<"))
                self.reply("250 2.1.5 Ok")
            elif verb == "DATA":
                self.reply("354 go ahead")
                data = bytearray()
                while True:
                    l = self.rfile.readline()
                    if l in (b".\r\n", b".\n", b""):
                        break
                    data += l[1:] if l.startswith(b".") else l
                self.reply(self.forward(xforward, sender, rcpts, bytes(data)))
                xforward, sender, rcpts = [], None, []
            elif verb == "RSET":
                xforward, sender, rcpts = [], None, []
                self.reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("502 5.5.2 not implemented")

    def forward(self, xforward, sender, rcpts, data):
        data = b"X-Content-Filter: " + NAME.encode() + b"\r\n" + data
        try:
            with smtplib.SMTP("127.0.0.1", RETURN_PORT, local_hostname="contentfilter") as s:
                s.ehlo()
                if s.has_extn("xforward"):
                    for attrs in xforward:
                        code, msg = s.docmd("XFORWARD", attrs)
                        if code != 250:
                            raise smtplib.SMTPResponseException(code, msg)
                refused = s.sendmail(sender, rcpts, data)
            if refused:
                raise smtplib.SMTPRecipientsRefused(refused)
        except smtplib.SMTPResponseException as e:
            log("refused %s -> %s: %d %s" % (sender, rcpts, e.smtp_code, e.smtp_error))
            return "%d %s" % (e.smtp_code, e.smtp_error.decode("utf-8", "replace"))
        except (smtplib.SMTPException, OSError) as e:
            log("re-injection failed %s -> %s: %r" % (sender, rcpts, e))
            return "451 4.3.0 re-injection failed"
        log("passed %s -> %s xforward=%s" % (sender, ",".join(rcpts), " ".join(xforward)))
        return "250 2.0.0 Ok: passed to %d" % RETURN_PORT


def log(msg):
    sys.stderr.write("contentfilter %s: %s\n" % (NAME, msg))
    sys.stderr.flush()


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    LISTEN_PORT, RETURN_PORT, NAME = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    with Server(("127.0.0.1", LISTEN_PORT), Handler) as srv:
        print("ready %d" % LISTEN_PORT, flush=True)
        srv.serve_forever()
