# cryptmilter's mail plugin for Request Tracker 5 (contrib/rt/README.md).
# Part of cryptmilter, MIT License.
package RT::Interface::Email::Cryptmilter;

use strict;
use warnings;

use Role::Basic 'with';
with 'RT::Interface::Email::Role';

=head1 NAME

RT::Interface::Email::Cryptmilter - take the mail gateway's decryption and signature results

=head1 SYNOPSIS

    Set(@MailPlugins, qw(Cryptmilter));

=head1 DESCRIPTION

cryptmilter decrypts and verifies mail at the MTA and writes its verdicts
into the top-level header of the message it delivers:

    X-Cryptmilter-Encryption: decrypted; protocol=openpgp; key=...
    X-Cryptmilter-Signature: valid; protocol=openpgp; signer=alice@example.net; key=...

RT's mail gateway deletes its own C<X-RT-Incoming-*> headers from every
incoming message before any plugin sees it, and sets them only from its
own GnuPG/S/MIME results. This plugin runs after that step
(C<BeforeDecode>) and sets them from cryptmilter's top-level verdicts, as
RT itself would have:

    X-RT-Incoming-Encryption: Success | Not encrypted
    X-RT-Incoming-Signature:  <signer>      (only for a valid signature)
    X-RT-Privacy:             GnuPG | SMIME (only for either of the above)

so that RT's own consumers of these headers (C<Authz::RequireEncrypted>,
"encrypt replies to encrypted mail") see the gateway's results. Headers of
MIME parts below the top level are never read: cryptmilter removes
incoming C<X-Cryptmilter-*> fields from the top-level header only.

The top-level values can be trusted only when every message reaches
RT's mail gateway through the MTA that runs cryptmilter, inbound: see
F<contrib/rt/README.md>.

=cut

my %privacy = ( openpgp => 'GnuPG', smime => 'SMIME' );

# Verdict HEAD NAME: the status and parameters of the single field NAME,
# or nothing when it is absent, repeated or not in cryptmilter's syntax.
sub Verdict {
    my ( $head, $name ) = @_;
    my @values = $head->get_all($name);
    return unless @values == 1;
    my $v = $values[0];
    $v =~ s/\r?\n[ \t]+/ /g;
    $v =~ s/^\s+|\s+$//g;
    return unless $v =~ /^([a-z]+)((?:\s*;\s*[a-z_]+=[A-Za-z0-9@._+=,-]*)*)$/;
    my ( $status, $rest ) = ( $1, $2 );
    my %params;
    for my $p ( grep length, split /\s*;\s*/, $rest ) {
        my ( $k, $val ) = split /=/, $p, 2;
        $params{$k} = $val;
    }
    return { status => $status, %params };
}

sub BeforeDecode {
    my %args = ( Message => undef, @_ );
    my $head = $args{'Message'}->head;

    my $enc = Verdict( $head, 'X-Cryptmilter-Encryption' );
    my $sig = Verdict( $head, 'X-Cryptmilter-Signature' );
    unless ( $enc && $sig ) {
        $RT::Logger->info("Cryptmilter: no single X-Cryptmilter-Encryption and X-Cryptmilter-Signature at the top level; the message did not come through cryptmilter");
        return;
    }

    my $decrypted = $enc->{status} eq 'decrypted';
    my $valid     = $sig->{status} eq 'valid' && length( $sig->{signer} // '' );
    $head->replace( 'X-RT-Incoming-Encryption' => $decrypted ? 'Success' : 'Not encrypted' );
    $head->delete('X-RT-Incoming-Signature');
    $head->replace( 'X-RT-Incoming-Signature' => $sig->{signer} ) if $valid;
    $head->delete('X-RT-Privacy');
    my $protocol = $decrypted ? $enc->{protocol} : $valid ? $sig->{protocol} : undef;
    $head->replace( 'X-RT-Privacy' => $privacy{$protocol} )
        if $protocol && $privacy{$protocol};

    $RT::Logger->info( sprintf "Cryptmilter: encryption %s, signature %s%s",
        $enc->{status}, $sig->{status}, $valid ? " by $sig->{signer}" : '' );
    return;
}

1;
