//! `dig` (Debian's `bind9-dnsutils`) as a test's DNS client: a real, independent client asks a
//! server and the test reads the answer's status, flags and records.

use std::net::SocketAddr;
use std::process::Command;

/// Where a missing dig comes from.
const INSTALL_HINT: &str =
    "Run the test script (tests/run.sh), which installs dig (apt-get install bind9-dnsutils).";

/// One resource record as dig prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigRecord {
    /// The owner name, as printed (absolute, with the trailing dot).
    pub name: String,
    /// The TTL in seconds.
    pub ttl: u32,
    /// The record type (`TXT`, `CNAME`, `SOA`, ...).
    pub rtype: String,
    /// The record data in presentation format (a TXT's strings keep their quotes).
    pub data: String,
}

/// What a DNS server answered one query.
#[derive(Clone, Debug)]
pub struct DigAnswer {
    /// The response code: `NOERROR`, `NXDOMAIN`, `REFUSED`, `SERVFAIL`, ...
    pub status: String,
    /// The header flags set: `qr`, `aa`, `tc`, `rd`, `ra`, ...
    pub flags: Vec<String>,
    /// The answer section.
    pub answer: Vec<DigRecord>,
    /// The authority section.
    pub authority: Vec<DigRecord>,
    /// The additional section (the EDNS OPT pseudo-record excluded).
    pub additional: Vec<DigRecord>,
    /// dig's whole output, for failure messages.
    pub output: String,
}

impl DigAnswer {
    /// Whether the header has `flag` (`"aa"`, `"tc"`, ...).
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|set| set == flag)
    }

    /// The data of the answer records of type `rtype`, in order.
    pub fn answers(&self, rtype: &str) -> Vec<&str> {
        self.answer
            .iter()
            .filter(|record| record.rtype.eq_ignore_ascii_case(rtype))
            .map(|record| record.data.as_str())
            .collect()
    }

    /// The answer's TXT records, each as its strings joined (quotes removed, `\"` and `\\`
    /// unescaped).
    pub fn txt(&self) -> Vec<String> {
        self.answers("TXT").into_iter().map(unquote).collect()
    }
}

/// Asks `server` with dig: `args` are dig's own (`TXT`, a name, `+norecurse`, `+tcp`, `+noedns`,
/// ...; `+ignore` to see a truncated UDP answer instead of dig's retry over TCP). Waits 2 s per
/// try, two tries, unless `args` say otherwise. Panics when dig is missing or gets no answer.
pub fn dig(server: SocketAddr, args: &[&str]) -> DigAnswer {
    try_dig(server, args).unwrap_or_else(|output| panic!("dig got no answer: {output}"))
}

/// [`dig`], but a server that does not answer (a timeout, a closed TCP port) is an `Err` with
/// dig's output rather than a panic.
pub fn try_dig(server: SocketAddr, args: &[&str]) -> Result<DigAnswer, String> {
    let output = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        // Defaults before the caller's arguments, which override them.
        .args(["+time=2", "+tries=2"])
        .args(args)
        .args([
            "+noall",
            "+comments",
            "+answer",
            "+authority",
            "+additional",
        ])
        .output()
        .unwrap_or_else(|error| panic!("cannot run dig: {error}. {INSTALL_HINT}"));
    let text = format!(
        "dig @{server} {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    parse(&text).ok_or(text)
}

/// Reads dig's `+noall +comments` sections; `None` when there is no header (no answer).
fn parse(output: &str) -> Option<DigAnswer> {
    let mut status = None;
    let mut flags = Vec::new();
    let (mut answer, mut authority, mut additional) = (Vec::new(), Vec::new(), Vec::new());
    let mut section: Option<&mut Vec<DigRecord>> = None;
    for line in output.lines() {
        if let Some(header) = line.strip_prefix(";; ->>HEADER<<-") {
            // ` opcode: QUERY, status: NXDOMAIN, id: 4242`
            status = header
                .split(',')
                .find_map(|part| part.trim().strip_prefix("status: "))
                .map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix(";; flags:") {
            // ` qr aa rd; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 1`
            let set = rest.split(';').next().unwrap_or_default();
            flags = set.split_whitespace().map(str::to_owned).collect();
        } else if line.starts_with(";; ANSWER SECTION:") {
            section = Some(&mut answer);
        } else if line.starts_with(";; AUTHORITY SECTION:") {
            section = Some(&mut authority);
        } else if line.starts_with(";; ADDITIONAL SECTION:") {
            section = Some(&mut additional);
        } else if line.starts_with(";; ") && line.ends_with("SECTION:") {
            // The OPT pseudo-section: its lines are no records.
            section = None;
        } else if line.starts_with(';') || line.trim().is_empty() {
            // A comment (a warning, the EDNS line) or the gap between sections.
        } else if let (Some(records), Some(record)) = (section.as_mut(), record(line)) {
            records.push(record);
        }
    }
    Some(DigAnswer {
        status: status?,
        flags,
        answer,
        authority,
        additional,
        output: output.to_owned(),
    })
}

/// `name ttl class type data...`, as dig prints a record.
fn record(line: &str) -> Option<DigRecord> {
    let mut fields = line.split_whitespace();
    let name = fields.next()?.to_owned();
    let ttl = fields.next()?.parse().ok()?;
    let _class = fields.next()?;
    let rtype = fields.next()?.to_owned();
    let data = fields.collect::<Vec<_>>().join(" ");
    Some(DigRecord {
        name,
        ttl,
        rtype,
        data,
    })
}

/// A TXT record's data (`"a" "b"`) as one string (`ab`), dig's escapes (`\"`, `\\`, `\DDD`)
/// undone.
fn unquote(data: &str) -> String {
    let mut bytes = Vec::new();
    let mut quoted = false;
    let mut chars = data.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                let rest = chars.as_str();
                let digits = rest
                    .get(..3)
                    .filter(|d| d.bytes().all(|b| b.is_ascii_digit()));
                match digits.and_then(|d| d.parse::<u8>().ok()) {
                    Some(byte) => {
                        bytes.push(byte);
                        chars = rest[3..].chars();
                    }
                    None => {
                        let mut buffer = [0; 4];
                        let next = chars.next().unwrap_or('\\');
                        bytes.extend_from_slice(next.encode_utf8(&mut buffer).as_bytes());
                    }
                }
            }
            c if quoted => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_with_a_cname_and_an_authority_is_read() {
        let output = "\
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 44104
;; flags: qr aa rd; QUERY: 1, ANSWER: 2, AUTHORITY: 1, ADDITIONAL: 1

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
;; ANSWER SECTION:
_acme-challenge.x.test.\t0\tIN\tCNAME\ty.other.test.
y.other.test.\t\t60\tIN\tTXT\t\"he said \\\"hi\\\"\" \"\\033!\"

;; AUTHORITY SECTION:
other.test.\t300\tIN\tSOA\tns1.other.test. admin.other.test. 1 2 3 4 5
";
        let answer = parse(output).expect("a header");
        assert_eq!(answer.status, "NOERROR");
        assert_eq!(answer.flags, ["qr", "aa", "rd"]);
        assert!(answer.has_flag("aa") && !answer.has_flag("tc"));
        assert_eq!(answer.answers("CNAME"), ["y.other.test."]);
        assert_eq!(answer.txt(), ["he said \"hi\"!!"]);
        assert_eq!(answer.answer[1].ttl, 60);
        assert_eq!(answer.authority.len(), 1);
        assert_eq!(answer.authority[0].rtype, "SOA");
        assert!(answer.additional.is_empty());
    }

    #[test]
    fn no_header_is_no_answer() {
        let output = ";; communications error to 127.0.0.1#53: timed out\n\
                      ;; no servers could be reached\n";
        assert!(parse(output).is_none());
    }
}
