# Request Tracker behind cryptmilter (contrib/rt/README.md). Install as
# /etc/request-tracker5/RT_SiteConfig.d/60-cryptmilter.pm.

# cryptmilter decrypts, verifies, signs and encrypts at the MTA; RT must
# not: with its own GnuPG or S/MIME on, RT checks leftover signature parts
# against its empty keyring (red "missing public key"), and for mail it
# believes was encrypted tries to encrypt notifications itself.
# (%Crypt follows: with neither protocol enabled RT's crypto is off.)
Set(%GnuPG, Enable => 0);
Set(%SMIME, Enable => 0);

# Take cryptmilter's top-level results as RT's X-RT-Incoming-* headers
# (lib/RT/Interface/Email/Cryptmilter.pm). To refuse unencrypted mail,
# list Authz::RequireEncrypted after it: it then sees the gateway's result.
Set(@MailPlugins, qw(Cryptmilter));

# Notifications go through the MTA's sendmail command, where cryptmilter
# signs them and encrypts each recipient's copy (Postfix:
# non_smtpd_milters). The default sendmailpipe with /usr/sbin/sendmail.
Set($MailCommand, 'sendmailpipe');

# Where refusals go (cryptmilter's "no usable encryption key" under
# policy "required" bounces to the envelope sender): a person, not the
# queue, or every bounce opens a ticket.
#Set($SetOutgoingMailFrom, 'rt-owner@example.org');

1;
