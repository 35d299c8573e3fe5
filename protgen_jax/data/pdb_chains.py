"""PDB chains fetched by id: the chain table of the `structures` dataset, and how each chain is obtained.

A chain `<PDBID>_<chain id>` (`ChainRecord`) is cut from its structure file: entry PDBID of the PDB
archive at `pdb_url()` (`$PROTGEN_PDB_URL` to change it; tried as mmCIF when the entry has no PDB-format
file), or the file at the record's own URL (the Kortemme-Lab/covariation domain files). The cut keeps the
chain's ATOM lines (and HETATM MSE) of the first model, altloc blank or A, under a line
`REMARK   1 EXTRACTED CHAIN <id> FROM <url>`. No checksums exist for these files, so each chain is checked
against its recorded residue count and sequence digest (the first 8 hex digits of sha256 of its one-letter
sequence); a chain that differs is left out and reported. `_fetch_chains` downloads the structure files in
parallel threads and places each chain that checks out with `os.replace`; `_manifest_csv` writes the
manifest (name, source, chain, n_res, chain_breaks, seq) of a chain folder. Biotite (imported on use)
reads mmCIF files and checks the chains.
"""

import csv
import hashlib
import http.client
import io
import logging
import os
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from protgen_jax.data.downloads import _TIMEOUT, _network_error
from protgen_jax.errors import DataError

__all__ = ["PDB_URL", "ChainRecord", "pdb_url"]

logger = logging.getLogger(__name__)

_WORKERS = 8  # parallel PDB entry downloads

PDB_URL = "https://files.rcsb.org/download"
"""The PDB archive's download folder (`<PDB_URL>/<ID>.pdb`, `.cif`); `$PROTGEN_PDB_URL` overrides it."""


def pdb_url() -> str:
    """Where PDB entries are downloaded from: `$PROTGEN_PDB_URL`, else `PDB_URL`."""
    return (os.environ.get("PROTGEN_PDB_URL") or PDB_URL).rstrip("/")


@dataclass(frozen=True)
class ChainRecord:
    """One chain of a `PdbChains` folder: file `<name>.pdb`, with what a correct copy must hold."""

    name: str  # <PDBID>_<chain id>
    n_res: int  # residues with a CA atom
    seq_sha: str  # the first 8 hex digits of sha256(one-letter sequence of those residues)
    url: str = ""  # the structure file to cut it from; "" = entry <PDBID> of the PDB archive

    @property
    def entry(self) -> str:
        return self.name.rsplit("_", 1)[0]

    @property
    def chain_id(self) -> str:
        return self.name.rsplit("_", 1)[1]

    def source_url(self) -> str:
        return self.url or f"{pdb_url()}/{self.entry}.pdb"


_KCOV_DOMAINS = (
    "https://raw.githubusercontent.com/Kortemme-Lab/covariation/"
    "e806290c96d08474e8043aff118f3568d526b2e7/input/domains"
)

# The chains of shared/data/structures/manifest.csv: NAME:N_RES:SEQ_SHA[:PFAM]. SEQ_SHA = the first 8 hex
# digits of sha256(seq); PFAM marks the 36 renumbered domain files of Kortemme-Lab/covariation, fetched
# from there (<_KCOV_DOMAINS>/<PFAM>/<NAME>.pdb); every other chain is cut from PDB entry NAME[:4].
_STRUCTURE_CHAINS = """
1TTQ_A:256:55bfae04 4BLM_A:256:2605e7ea 1HTI_A:248:07ce942b 1ZYM_B:248:d92f6623
1FT8_C:244:8aedd135 2A01_A:243:bfff76ad 1ACB_E:241:0f90d1a9 1DXX_A:238:391389d7
1CHK_A:238:91045250 1LVM_A:229:2393a656 1OPG_H:227:86305f18 2BRD_A:221:8a507e3f
1AKY_A:218:f7a51a37 1ANK_A:214:c7fb9fc9 1OPG_L:214:be37e95d 1CUN_A:213:bea48a2f
1IO2_A:213:e482bcd4 1NFI_E:213:daa4cdab 1BOY_A:211:cdd27dc4 1U5P_A:211:5667cf46
2NTE_A:210:26f4792a 1JLV_A:207:1942322c 1JNX_X:207:2a524b58 1FC1_A:206:5e6367d7
3L15_B:204:1139a924 5OAQ_A:204:dd1d642c 1A0F_A:201:93edfe75 1G6N_B:201:0134085e
1IDS_A:198:a101354f 1N0J_A:198:e65e4d2e 2TRT_A:198:b3f2edb4 1TUP_A:196:44d82a6b
5VP3_A:195:a54a2e25 3HHR_B:195:efd48ebe 1G3P_A:192:961ad420 2Q98_A:191:03a5d844
1A23_A:189:17684ef8 1HGU_A:186:1cb2470a 1XXN_A:185:27b6dda4 3D2A_A:179:182d9763
1BNL_A:178:8253a9e0 2KS4_A:176:c416c7c7 1HNG_A:175:5b9fc37d 1HK0_X:173:af6b69e1
1XZO_A:172:77a8a2b9 1FLV_A:168:f0bfe087 1GUA_A:167:660a1873 2ARF_A:165:2de538be
3BCI_A:165:f310fa47 137L_B:164:f17b511e 1LS4_A:164:0e71f911 1NMV_A:163:d8766228
1B0O_A:161:de6af188 1DDR_A:159:e193a4b6 1MX4_B:159:0cf0a545 4BUQ_A:158:afa444e5
5T43_A:158:96cf6067 1A5E_A:156:7a2d16ef 1H56_A:156:ac3ba190 1GOB_A:155:6e6629c1
1SPD_A:153:a08c7027 1BVC_A:153:4e1e5bdd 1IOB_A:153:8f79ab69 1AM7_A:150:9461bd4f
1Z2U_A:150:51ac447f:PF00179 1DIV_A:149:ad8b846c 1CFD_A:148:787e5215 1RIL_A:147:db43a635
1THQ_A:147:8af238c3 3F6R_A:147:20f2d743 1RHG_A:145:e091a25d 2N53_A:143:32173158
1JY0_B:141:6d21003a 1TZV_A:141:fc37e443:PF01029 3PG0_A:140:93ffbd98 1PFL_A:139:f6d78c10
3D3B_A:139:c38d5c7d 2IN9_A:139:5f3caa6e 1QJP_A:137:e36fe699 2Z3V_A:137:94a622fe:PF00582
1JL3_A:137:91dd2c30:PF01451 1EY0_A:136:94a6f432 3F04_A:136:df66ea30:PF00168 2LTB_A:135:dd53078b
1AQT_A:135:e0f8f1dd:PF02823 4BVM_A:133:4173920a 2H3F_A:131:29dfbaa5 1C52_A:131:1b214798
1HMS_A:131:9470bc4b 1IFB_A:131:d4d22551 1ITM_A:130:eff2bab3 1B7S_A:130:3de1ab7d
1E6K_A:130:3347fc2d 1EL1_A:130:50b22954 1QGV_A:130:b0d9f31d 1FLQ_A:129:027a3774
1PDO_A:129:4ac7cf12 1E65_A:128:e15d1ac4 1OH0_B:128:07071249 1O1U_A:127:db0ae258
2PR5_A:127:891ca5cd 4BJX_A:127:fbf3f5c6 4WAA_A:126:d08906de 2QLC_A:126:65c79e34:PF04002
1A7V_A:125:55dd9953 2M5S_A:124:8a289a1d 1HFZ_D:124:883cd45d 1KF2_A:124:3fdb0ecd
1P2P_A:124:4789b566 1NM1_G:123:085120aa 1QND_A:123:e3a05467 3S4M_A:121:3622bf27
1MVO_A:121:f4a22298:PF00072 5JXB_C:119:2d1495cb 2PND_A:119:a24022a6:PF07686
2A0B_A:118:b06fdbc0:PF01627 1UNQ_A:117:351cc4cb:PF00169 1C2R_A:116:d30e45ff
3JVL_A:116:a1661221:PF00439 1LVE_A:114:2bfc96e6 1SCE_C:111:1d5eb7a5 1YEA_A:111:a7973da0
2MMX_A:111:b5724789 1BAN_C:109:71441166 1RTP_1:109:4ab87912 3DVI_A:109:b6611d0d
1FQT_A:109:ff50274e:PF00355 1RRO_A:108:df9f404b 2KYC_A:108:4294e4e4 2TRX_A:108:6edb73f9
3SSI_A:108:265e4e14 1GN0_A:108:30442a68:PF00581 1OAP_A:108:1a3e4899:PF00691 1FKB_A:107:de9f9337
1M7T_A:107:625f7cdd 1NFI_B:107:d279ce59 3GVA_A:107:5ea6b7cf:PF01035 2N7Z_A:106:7ae9201d
1JIW_I:105:4decf0db 1YYJ_A:105:53f8f488 1FB0_A:105:0cfb5802:PF00085 1AKK_A:104:e8665b5a
1AYF_B:104:b4f08868 1BU4_A:104:654fa2cf 2K3K_A:104:604e235a 1KCQ_A:103:e22bcd6a
1ONC_A:103:74b5f0e9 2H3L_A:103:351ac1d0:PF00595 2C9Q_A:102:ea0b8b8a 2CLR_B:100:e92bf108
2ZXJ_A:100:80df4ced:PF00486 3GQS_A:100:966b85ac:PF00498 2K7K_A:99:c474b4c4 1FRD_A:98:bddd9d12
1FXA_A:98:d5021641 1APS_A:98:dea20306 1H7M_A:97:18208d1b 1MGR_A:97:411ee0c8 1RIS_A:97:45370168
1D5G_A:96:0615ddfe 1IV7_B:96:61645d21 1N88_A:96:86471690 3O39_A:96:b99f520f 1LNI_A:96:a00bb1f0
1U2H_A:96:a60bff10:PF07679 3BN0_A:95:a0c51b1f 1IET_A:94:b6d17693 1TTG_A:94:6905a3c5
1J8I_A:93:6842a1ff 1WIT_A:93:2c0d0f4d 1LMB_4:92:93528d4c 2H61_B:92:5ef09329 4N6V_0:91:1870b5c4
2BJD_A:90:eb253d3e 2MPC_A:90:be30fec0 3BR8_A:90:6b6125ee:PF00708 3MQI_A:90:8cd9f30b:PF01833
1H0X_A:89:9ec0e7ad 1BTA_A:89:f0d632b0 1TEN_A:89:e54ef0b3 1TIT_A:89:8a914b33 1TPK_A:88:dd0dcaea
1Y4Y_A:87:a9f351e2 1YHB_A:87:9dc1f52f 3D3B_J:87:6f9d0ca5 2X1B_A:87:5554c859:PF00076
1PTF_A:87:6ff94fe4:PF00381 1AYI_A:86:fb3d0d24 1IMQ_A:86:97295d31 2ABD_A:86:14478238
2HPR_A:86:9ececebb 4YEF_B:86:c3272078 1POH_A:85:bafe3bf8 1B5M_A:84:0b920a5b 451C_A:82:d77c5f56
3FYM_A:82:5eb5490f:PF12844 1GLU_A:81:af80c5db 1O6X_A:81:0f066f0d 1KDX_A:81:8254bf8a
2O37_A:81:0e69d171:PF00226 1R6R_A:80:37c53843 1HUU_A:80:46e5acf6 2KJ3_A:79:03cb525d
2PTL_A:78:19b85ae2 3G1G_A:77:6924de16 1HME_A:77:5ce1f726 2BWF_A:77:8dacbcf8:PF00240
1T8K_A:77:985351cb:PF00550 1GUA_B:76:c3431bf9 1AAR_A:76:233b4b0b 6ICB_A:76:62acf2d1
5TR5_A:75:a4aa3af8 1HCQ_A:74:d87eadc4 1WVN_A:74:8f7a5c70:PF00013 2EVB_A:74:09be3bb5:PF00364
3FIS_A:73:2feb3e07 3C2I_A:72:3a8afc12 1A43_A:72:3e591c44 1DKT_A:72:7cfc867d 1SPB_P:71:8fdc94b6
2HIP_A:71:d1cf6d9c 3I2Z_A:71:6fccdd3f:PF00313 1BFM_A:69:cf458515 1L6H_A:69:17c90866
1MJC_A:69:2eda23a7 1UZC_A:69:6e218c8e 1CTF_A:68:2cd07b6e:PF00542 1CSP_A:67:27d80e68
1QQV_A:67:a1491e58 2O9S_A:67:9a91e2de:PF00018 1AZP_A:66:ba6d6e57 1G6P_A:66:5b1951d5
1MSI_A:66:aade161a 2CI2_I:65:03da0724 1ACB_I:63:59f6595e 5CRO_A:61:1ed6b00a 4JZ4_A:60:86727919
1BXY_A:60:d8cbedf3:PF00327 2RPN_A:59:5ac81c6a 1SHF_A:59:c643ef5b 2A36_A:59:945f0e0e
1BPI_A:58:70b8ee8c 2SPZ_A:58:bb4a30d5 1IOJ_A:57:07fefd97 1SHG_A:57:338cff41 1EM7_A:56:52d91eff
1ROP_A:56:fcdf3b54 2JUC_A:55:f2b57726 4HE7_A:54:5142ad2f 1ARR_A:53:d9129d0b 1BRF_A:53:aaacb180
1IRO_A:53:2aaa3fc8 1GV5_A:52:96aa0673 2WQG_A:51:33ce9916 1GUU_A:50:d18b2ab0:PF00249
1OTR_A:49:4eb8ef7d 1NVO_A:48:73df3f37 1JL9_B:45:02ed5f4d 1W4E_A:45:16cf8d9e 1W4H_A:45:75fb3f91
1SAK_A:42:012eae00 1K9Q_A:40:788c41f8 5OAQ_L:40:a1e20f18
"""


def _chain_records(table: str) -> tuple[ChainRecord, ...]:
    records = []
    for token in table.split():
        name, n_res, digest, *pfam = token.split(":")
        url = f"{_KCOV_DOMAINS}/{pfam[0]}/{name}.pdb" if pfam else ""
        records.append(ChainRecord(name, int(n_res), digest, url))
    return tuple(records)


def _get_text(url: str, hint: str) -> str | None:
    """The text at `url`; None for an HTTP error (e.g. 404), a one-line DataError when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
            return response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _network_error(url, err, "a structure", hint) from err


def _cut_chain(text: str, chain_id: str, url: str) -> str | None:
    """One chain of a PDB file: its ATOM lines (and HETATM MSE), first model, altloc blank or A."""
    atoms = []
    for line in text.splitlines():
        record = line[:6]
        if record == "ENDMDL":
            break
        if (
            (record == "ATOM  " or (record == "HETATM" and line[17:20] == "MSE"))
            and line[21:22] == chain_id
            and line[16:17] in (" ", "A")
        ):
            atoms.append(line)
    if not atoms:
        return None
    return (
        "\n".join([f"REMARK   1 EXTRACTED CHAIN {chain_id} FROM {url}", *atoms, "TER", "END"])
        + "\n"
    )


def _cut_chain_cif(text: str, chain_id: str, url: str) -> str | None:
    """One chain of an mmCIF file (author chain id), first model, as PDB text (biotite)."""
    from biotite.structure.io import pdb, pdbx

    try:
        atoms = pdbx.get_structure(
            pdbx.CIFFile.read(io.StringIO(text)), model=1, use_author_fields=True
        )
    except Exception:  # biotite raises many types on malformed files; all mean "unusable"
        return None
    atoms = atoms[(atoms.chain_id == chain_id) & (~atoms.hetero | (atoms.res_name == "MSE"))]
    if atoms.array_length() == 0:
        return None
    out = pdb.PDBFile()
    out.set_structure(atoms)
    buffer = io.StringIO()
    out.write(buffer)
    return f"REMARK   1 EXTRACTED CHAIN {chain_id} FROM {url}\n{buffer.getvalue()}"


def _check_chain(path: Path, record: ChainRecord) -> str | None:
    """None when the chain file holds the recorded chain, else what differs."""
    from protgen_jax.data.structures import load_chain

    try:
        chain = load_chain(path, record.chain_id, min_length=1, max_length=1 << 30)
    except DataError as err:
        return f"{record.name}: unreadable ({err})"
    digest = hashlib.sha256(chain.sequence.encode()).hexdigest()[:8]
    if (chain.length, digest) != (record.n_res, record.seq_sha):
        return (
            f"{record.name}: {chain.length} residues, sequence digest {digest} (recorded: "
            f"{record.n_res}, {record.seq_sha})"
        )
    return None


def _download_entry(url: str, archive: bool, hint: str) -> tuple[str | None, str]:
    """(text, the URL it came from) of one structure file; (None, url) when it cannot be downloaded.
    An entry of the PDB archive without a PDB-format file is tried as mmCIF."""
    text = _get_text(url, hint)
    if text is None and archive and url.endswith(".pdb"):
        cif = url[: -len(".pdb")] + ".cif"
        text = _get_text(cif, hint)
        if text is not None:
            return text, cif
    return text, url


def _place_chains(
    text: str | None, used: str, records: list[ChainRecord], staging: Path, folder: Path
) -> list[str]:
    """Cut, check and place the chains `records` of one structure file; returns the problems."""
    if text is None:
        return [f"{record.name}: {used} could not be downloaded" for record in records]
    problems = []
    for record in records:
        cut = (_cut_chain_cif if used.endswith(".cif") else _cut_chain)(text, record.chain_id, used)
        if cut is None:
            problems.append(f"{record.name}: no chain {record.chain_id} in {used}")
            continue
        staged = staging / f"{record.name}.pdb"
        staged.write_text(cut)
        problem = _check_chain(staged, record)
        if problem:
            staged.unlink()
            problems.append(problem)
        else:
            os.replace(staged, folder / staged.name)
    return problems


def _fetch_chains(root: Path, name: str, filename: str, chains: tuple[ChainRecord, ...]) -> Path:
    """Fill `root/filename` (root: the cache folder of dataset `name`) with the chains it lacks;
    chains that fail are reported.

    Structure files are downloaded in parallel threads; chains are cut and checked (biotite) here."""
    folder = root / filename
    folder.mkdir(parents=True, exist_ok=True)
    todo = [r for r in chains if not (folder / f"{r.name}.pdb").is_file()]
    groups: dict[str, list[ChainRecord]] = {}
    for record in todo:
        groups.setdefault(record.source_url(), []).append(record)
    hint = (
        f"download the entries by hand ({pdb_url()}/<ID>.pdb) and cut each chain into "
        f"{folder}/<ID>_<chain>.pdb, or set PROTGEN_DATA_DIR to a folder holding {name}/{filename}"
    )
    problems: list[str] = []
    with (
        tempfile.TemporaryDirectory(dir=root, prefix=".staging-") as staging,
        ThreadPoolExecutor(_WORKERS) as pool,
        tqdm(total=len(todo), unit="chain", desc=f"{name}/{filename}", disable=None) as bar,
    ):
        futures = {
            pool.submit(_download_entry, url, not records[0].url, hint): records
            for url, records in groups.items()
        }
        try:
            for future in as_completed(futures):
                records = futures[future]
                text, used = future.result()
                problems.extend(_place_chains(text, used, records, Path(staging), folder))
                bar.update(len(records))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    done = sum((folder / f"{r.name}.pdb").is_file() for r in chains)
    if done == 0:
        raise DataError(
            f"{name}/{filename}: no chain could be fetched ({'; '.join(problems[:3])}); {hint}"
        )
    if problems:
        logger.warning(
            "%s/%s: %d of %d chains fetched and checked; %d left out: %s",
            name,
            filename,
            done,
            len(chains),
            len(problems),
            "; ".join(problems),
        )
    return folder


def _remark_source(path: Path) -> str:
    with path.open(errors="replace") as handle:
        first = handle.readline()
    return (
        first.split(" FROM ", 1)[1].strip()
        if first.startswith("REMARK") and " FROM " in first
        else ""
    )


def _manifest_csv(folder: Path, names: list[str]) -> bytes:
    """The manifest (name, source, chain, n_res, chain_breaks, seq) of the chains `names` present in
    `folder`; `source` is where each chain was cut from (its REMARK line), else the chain file."""
    from protgen_jax.data.structures import load_chain

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["name", "source", "chain", "n_res", "chain_breaks", "seq"])
    for chain_name in names:
        path = folder / f"{chain_name}.pdb"
        if not path.is_file():
            continue
        chain_id = chain_name.rsplit("_", 1)[1] if "_" in chain_name else None
        chain = load_chain(path, chain_id, min_length=1, max_length=1 << 30)
        origin = _remark_source(path) or str(path)
        writer.writerow(
            [chain_name, origin, chain.chain_id, chain.length, len(chain.breaks), chain.sequence]
        )
    return buffer.getvalue().encode()
