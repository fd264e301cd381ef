# The support queue of docs/rt.md, as an admin sets it up in RT's web UI
# (Admin > Queues > Create, Admin > Users > Create, the queue's Group
# Rights and Watchers). The RT suite loads it with
#   rt-setup-database --action insert --skip-create --datafile rt-initialdata.pl
@Queues = ({
    Name              => 'support',
    Description       => 'Support',
    CorrespondAddress => 'rt@example.org',
    CommentAddress    => 'rt-comment@example.org',
});
@Users = (
    # Trent, the support agent (web UI and REST 2).
    { Name => 'trent', Password => 'trent-e2e-password', EmailAddress => 'trent@example.org', RealName => 'Trent', Privileged => 1 },
    # Faythe, the support lead: AdminCc of the queue.
    { Name => 'faythe', EmailAddress => 'faythe@example.org', RealName => 'Faythe', Privileged => 1 },
);
@ACL = (
    # Anyone may open a ticket and reply to it by mail.
    (map { { GroupDomain => 'SystemInternal', GroupType => 'Everyone', Queue => 'support', Right => $_ } }
        qw(CreateTicket ReplyToTicket)),
    { UserId => 'trent', Right => 'SuperUser' },
    (map { { UserId => 'faythe', Queue => 'support', Right => $_ } } qw(SeeQueue ShowTicket WatchAsAdminCc)),
);
@Final = (sub {
    my $q = RT::Queue->new(RT->SystemUser);
    $q->Load('support') or die "no queue support\n";
    my ($ok, $msg) = $q->AddWatcher(Type => 'AdminCc', Email => 'faythe@example.org');
    die "Faythe as AdminCc of support: $msg\n" unless $ok;
});
1;
