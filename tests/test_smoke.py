from conftest import Api


async def test_signup_flow(api: Api) -> None:
    access, refresh = await api.signed_up()
    assert (await api.me(access)).status_code == 200
    assert (await api.refresh(refresh)).status_code == 200
