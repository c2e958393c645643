#!/usr/bin/perl
# tandem's VIP announcer: kept running beside tandem (or `tandem vip-agent`) from the
# start, so that taking a VIP over starts no process. It reads one command a line on
# stdin and answers each on stdout with `SEQ ok` or `SEQ error TEXT`:
#
#   SEQ up ADDRESS PREFIX INTERFACE        add the address (netlink), then send one
#                                          gratuitous ARP (IPv6: unsolicited NA)
#   SEQ add ADDRESS PREFIX INTERFACE       add the address, announce nothing
#   SEQ announce ADDRESS PREFIX INTERFACE  one more gratuitous ARP or NA
#   SEQ down ADDRESS PREFIX INTERFACE      remove the address, with any prefix (IPv6: PREFIX)
#
# `up` is idempotent (the address is replaced when it is up already) and its answer
# comes once the packet has left. It exits when stdin closes: when tandem dies, nothing
# of it is left to announce a VIP that this node no longer holds. Only perl-base (Debian's
# essential perl) is used: Socket and raw system calls, no module from elsewhere.
use strict;
use warnings;
use Socket qw(inet_pton AF_INET AF_INET6 SOCK_RAW SOCK_DGRAM);

$| = 1;
my $AF_NETLINK = 16;
my $AF_PACKET = 17;
my ($RTM_NEWADDR, $RTM_DELADDR, $NLMSG_ERROR) = (20, 21, 2);
my ($NLM_F_REQUEST, $NLM_F_ACK, $NLM_F_REPLACE, $NLM_F_CREATE) = (1, 4, 0x100, 0x400);
my ($IFA_ADDRESS, $IFA_LOCAL, $IFA_FLAGS, $IFA_F_NODAD) = (1, 2, 8, 0x02);
my ($SIOCGIFINDEX, $SIOCGIFHWADDR) = (0x8933, 0x8927);
my ($IPPROTO_IPV6, $IPPROTO_ICMPV6, $IPV6_MULTICAST_IF, $IPV6_MULTICAST_HOPS) = (41, 58, 17, 18);
my ($ENODEV, $EADDRNOTAVAIL, $ENOENT) = (19, 99, 2);

# Without NET_ADMIN nothing can move; without NET_RAW addresses move unannounced.
my $caps = '0';
if (open(my $st, '<', '/proc/self/status')) {
  while (<$st>) { if (/^CapEff:\s*([0-9a-f]+)/) { $caps = $1; last } }
  close $st;
}
my $eff = hex(substr($caps, -8));
if (!(($eff >> 12) & 1)) {
  print "0 error no CAP_NET_ADMIN (uid $<): run as root with NET_ADMIN and NET_RAW, or with them as ambient capabilities\n";
  exit 1;
}

socket(my $nl, $AF_NETLINK, SOCK_RAW, 0) or fail0("netlink socket: $!");
bind($nl, pack('S x2 L L', $AF_NETLINK, 0, 0)) or fail0("netlink bind: $!");
socket(my $ctl, AF_INET, SOCK_DGRAM, 0) or fail0("control socket: $!");
my ($arp, $na);
my $raw_error = '';
socket($arp, $AF_PACKET, SOCK_RAW, 0) or do { $arp = undef; $raw_error = "packet socket: $!" };
socket($na, AF_INET6, SOCK_RAW, $IPPROTO_ICMPV6) or $na = undef;
# It runs for a millisecond per takeover, and then it should not wait behind busy
# processes for the CPU: a higher priority where that is allowed (CAP_SYS_NICE), else as is.
my $nice = setpriority(0, 0, -10) ? ' nice -10' : '';
print "0 ready$nice" . ($raw_error eq '' ? '' : " (no announcements: $raw_error)") . "\n";

my $seq = 0;
while (my $line = <STDIN>) {
  chomp $line;
  my ($id, $cmd, $addr, $prefix, $dev) = split / /, $line;
  if (!defined $dev || $id !~ /^\d+$/ || $prefix !~ /^\d+$/) {
    print((defined $id && $id =~ /^\d+$/ ? $id : 0), " error bad command '$line'\n");
    next;
  }
  my $family = index($addr, ':') >= 0 ? AF_INET6 : AF_INET;
  my $bin = inet_pton($family, $addr);
  my $error = !defined $bin ? "bad address $addr" : length($dev) > 15 ? "bad interface $dev" : undef;
  my ($index, $mac);
  ($index, $mac, $error) = link_of($dev) unless defined $error;
  if (defined $error && $cmd eq 'down' && $error =~ /^no interface/) {
    # Nothing to remove from an interface that is gone.
    print "$id ok\n";
    next;
  }
  if (!defined $error) {
    if ($cmd eq 'up' || $cmd eq 'add') {
      $error = address($RTM_NEWADDR, $NLM_F_CREATE | $NLM_F_REPLACE, $family, $bin, $prefix, $index);
      $error //= announce($family, $bin, $index, $mac) if $cmd eq 'up';
    } elsif ($cmd eq 'announce') {
      $error = announce($family, $bin, $index, $mac);
    } elsif ($cmd eq 'down') {
      $error = remove($family, $bin, $prefix, $index);
    } else {
      $error = "unknown command $cmd";
    }
  }
  print defined $error ? "$id error $error\n" : "$id ok\n";
}
exit 0;

sub fail0 { print "0 error $_[0]\n"; exit 1 }

# Interface index and MAC, asked of the kernel in this network namespace.
sub link_of {
  my ($dev) = @_;
  my $req = pack('a16 x24', $dev);
  ioctl($ctl, $SIOCGIFINDEX, $req) or return (undef, undef, "no interface $dev: $!");
  my $index = unpack('x16 i', $req);
  $req = pack('a16 x24', $dev);
  ioctl($ctl, $SIOCGIFHWADDR, $req) or return (undef, undef, "no hardware address on $dev: $!");
  return ($index, substr($req, 18, 6), undef);
}

sub attr { my ($type, $data) = @_; my $len = 4 + length $data; pack('S S', $len, $type) . $data . ("\0" x ((4 - $len % 4) % 4)) }

# One netlink request; undef when the kernel acknowledged it, else its error.
sub netlink {
  my ($type, $flags, $body) = @_;
  $seq++;
  my $msg = pack('L S S L L', 16 + length $body, $type, $NLM_F_REQUEST | $NLM_F_ACK | $flags, $seq, 0) . $body;
  defined send($nl, $msg, 0) or return ($!+0, "netlink send: $!");
  while (1) {
    defined recv($nl, my $buf, 65536, 0) or return ($!+0, "netlink recv: $!");
    while (length $buf >= 16) {
      my ($len, $t, undef, $s) = unpack('L S S L', $buf);
      last if $len < 16;
      if ($t == $NLMSG_ERROR && $s == $seq) {
        my $errno = -unpack('x16 i', $buf);
        return (0, undef) if $errno == 0;
        local $! = $errno;
        return ($errno, "$!");
      }
      $buf = substr($buf, ($len + 3) & ~3);
    }
  }
}

sub address {
  my ($type, $flags, $family, $bin, $prefix, $index) = @_;
  my $body = pack('C C C C L', $family, $prefix, 0, 0, $index) . attr($IFA_LOCAL, $bin) . attr($IFA_ADDRESS, $bin);
  $body .= attr($IFA_FLAGS, pack('L', $IFA_F_NODAD)) if $family == AF_INET6;
  my ($errno, $error) = netlink($type, $flags, $body);
  return $error;
}

# Every entry of the address on the interface. IPv4: by address alone, whatever its
# prefix length; IPv6 entries are matched with the prefix length given.
sub remove {
  my ($family, $bin, $prefix, $index) = @_;
  for (1 .. 8) {
    my $body = pack('C C C C L', $family, $family == AF_INET6 ? $prefix : 0, 0, 0, $index) . attr($IFA_LOCAL, $bin);
    my ($errno, $error) = netlink($RTM_DELADDR, 0, $body);
    next if !defined $error;
    return undef if $errno == $EADDRNOTAVAIL || $errno == $ENOENT || $errno == $ENODEV;
    return $error;
  }
  return undef;
}

# A gratuitous ARP request (sender and target: the VIP), as `arping -U` sends it, or an
# unsolicited neighbour advertisement with the override flag to all nodes.
sub announce {
  my ($family, $bin, $index, $mac) = @_;
  if ($family == AF_INET) {
    return "no packet socket: $raw_error" unless defined $arp;
    my $bcast = "\xff" x 6;
    my $frame = $bcast . $mac . pack('n', 0x0806) . pack('n n C C n', 1, 0x0800, 6, 4, 1) . $mac . $bin . ("\0" x 6) . $bin;
    $frame .= "\0" x (60 - length $frame);
    my $to = pack('S n i S C C a8', $AF_PACKET, 0x0806, $index, 1, 0, 6, $bcast);
    defined send($arp, $frame, 0, $to) or return "sending the gratuitous ARP: $!";
    return undef;
  }
  return 'no ICMPv6 socket (NET_RAW)' unless defined $na;
  setsockopt($na, $IPPROTO_IPV6, $IPV6_MULTICAST_HOPS, pack('i', 255)) or return "hop limit: $!";
  setsockopt($na, $IPPROTO_IPV6, $IPV6_MULTICAST_IF, pack('i', $index)) or return "multicast interface: $!";
  my $msg = pack('C C n N', 136, 0, 0, 0x20000000) . $bin . pack('C C', 2, 1) . $mac;
  my $to = pack('S n N a16 L', AF_INET6, 0, 0, inet_pton(AF_INET6, 'ff02::1'), $index);
  defined send($na, $msg, 0, $to) or return "sending the neighbour advertisement: $!";
  return undef;
}
