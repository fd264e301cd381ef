-- One message through cryptmilter with OpenDKIM's miltertest.
-- Globals (miltertest -D NAME=VALUE):
--   port         the milter's TCP port on 127.0.0.1
--   client_ip    the SMTP client's address (conninfo and {client_addr})
--   daemon_name  optional {daemon_name} macro (e.g. ORIGINATING)
--   expect       "in": the result headers are added and the forged one
--                deleted; "out": no result header is added
-- Prints "miltertest: ok" on success, else "miltertest: FAIL: why" and exits 1.

-- check fails the script with a message (miltertest itself does not print
-- Lua errors).
local function check(cond, what)
	if not cond then
		io.stderr:write("miltertest: FAIL: " .. what .. "\n")
		os.exit(1)
	end
end

local function step(err, conn, what)
	check(err == nil, what .. " failed: " .. tostring(err))
	check(mt.getreply(conn) == SMFIR_CONTINUE, what .. ": unexpected reply")
end

mt.set_timeout(30)
local conn = mt.connect("inet:" .. port .. "@127.0.0.1", 40, 0.25)
check(conn ~= nil, "cannot connect to inet:" .. port .. "@127.0.0.1")

if daemon_name ~= nil then
	mt.macro(conn, SMFIC_CONNECT, "j", "mx.example.test", "{daemon_name}", daemon_name, "{client_addr}", client_ip)
else
	mt.macro(conn, SMFIC_CONNECT, "j", "mx.example.test", "{client_addr}", client_ip)
end
step(mt.conninfo(conn, "client.example.net", client_ip), conn, "conninfo")
step(mt.helo(conn, "client.example.net"), conn, "helo")
if daemon_name ~= nil then
	mt.macro(conn, SMFIC_MAIL, "i", "MT0001", "{daemon_name}", daemon_name, "{client_addr}", client_ip)
else
	mt.macro(conn, SMFIC_MAIL, "i", "MT0001", "{client_addr}", client_ip)
end
step(mt.mailfrom(conn, "<alice@example.net>"), conn, "mailfrom")
step(mt.rcptto(conn, "<rt@example.org>"), conn, "rcptto")
step(mt.header(conn, "From", "Alice <alice@example.net>"), conn, "header From")
step(mt.header(conn, "To", "rt@example.org"), conn, "header To")
step(mt.header(conn, "Subject", "miltertest"), conn, "header Subject")
step(mt.header(conn, "X-Cryptmilter-Signature", "valid; protocol=openpgp"), conn, "header X-Cryptmilter-Signature")
step(mt.eoh(conn), conn, "eoh")
step(mt.bodystring(conn, "Hello from miltertest.\r\n"), conn, "body")
check(mt.eom(conn) == nil, "eom failed")
local reply = mt.getreply(conn)
check(reply == SMFIR_ACCEPT or reply == SMFIR_CONTINUE, "eom: unexpected reply " .. tostring(reply))

-- added reports whether the milter added (or inserted) the field name,
-- with the given value when value is not nil.
local function added(name, value)
	if value == nil then
		return mt.eom_check(conn, MT_HDRINSERT, name) or mt.eom_check(conn, MT_HDRADD, name)
	end
	return mt.eom_check(conn, MT_HDRINSERT, name, value) or mt.eom_check(conn, MT_HDRADD, name, value)
end

if expect == "in" then
	check(added("X-Cryptmilter-Encryption", "none"), "X-Cryptmilter-Encryption: none not added")
	check(added("X-Cryptmilter-Signature", "none"), "X-Cryptmilter-Signature: none not added")
	check(mt.eom_check(conn, MT_HDRDELETE, "X-Cryptmilter-Signature") or mt.eom_check(conn, MT_HDRCHANGE, "X-Cryptmilter-Signature", ""),
		"forged X-Cryptmilter-Signature not deleted")
elseif expect == "out" then
	check(not added("X-Cryptmilter-Encryption"), "X-Cryptmilter-Encryption added to outbound mail")
	check(not added("X-Cryptmilter-Signature"), "X-Cryptmilter-Signature added to outbound mail")
else
	check(false, "set expect to in or out")
end

mt.disconnect(conn)
mt.echo("miltertest: ok")
